/**
 * The command line the CLI is running, for the provenance of the reports it writes (verify/provenance.ts):
 * `main(argv)` records it before parsing, and each command passes it to the library or its JSON report.
 * One `main` runs at a time in a process (the binary calls it once; tests call it in turn).
 */
let current: readonly string[] | undefined;

/** Records `polyquant ARGV…` as the command line of the run that is starting. */
export function setCommandLine(argv: readonly string[]): void {
  current = ['polyquant', ...argv];
}

/** The command line of the current run (undefined outside the CLI). */
export function commandLine(): readonly string[] | undefined {
  return current;
}
