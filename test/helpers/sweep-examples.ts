/**
 * The `polyquant sweep …` commands that the distributed-sweep examples run, read from the files themselves:
 * examples/github-actions/sweep.yml (the `run:` steps) and examples/kubernetes/sweep-job.yaml (the
 * containers' shell arguments). Tests run exactly these, so an example cannot drift from the CLI unnoticed.
 *
 * The shell text is split into words by a small POSIX-shell subset — quotes, `$NAME`, `${NAME}`,
 * `$((NAME + n))`, `&&` lists, a leading `exec` or `npx`, and globs matched against the shard folders.
 * Anything else in a sweep command (pipes, redirections, command substitution) is refused: the examples
 * keep their commands that simple on purpose.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { REPO_ROOT } from './shared.js';

export const GITHUB_ACTIONS_EXAMPLE = join(REPO_ROOT, 'examples', 'github-actions', 'sweep.yml');
export const KUBERNETES_EXAMPLE = join(REPO_ROOT, 'examples', 'kubernetes', 'sweep-job.yaml');

/** One `polyquant sweep` command as an example has it. */
export interface ExampleCommandLine {
  readonly example: 'github-actions' | 'kubernetes';
  /** Where in the file: `jobs.shard.steps[4].run`, `Job polyquant-sweep: containers[0].args[0]`. */
  readonly where: string;
  /** The command's shell text, verbatim (one command of an `&&` list). */
  readonly line: string;
}

/**
 * The whole distributed sweep of one example, instantiated: what each machine would run, in order. Run the
 * shard runs (concurrently, if you like), then `merge`, then `report`, all in one working directory (GitHub
 * Actions' paths are relative; Kubernetes' are under `volume`), e.g. with `runCli(...argv)` or
 * `node bin/polyquant.js ...argv`.
 */
export interface ExampleSweep {
  readonly example: 'github-actions' | 'kubernetes';
  readonly shards: number;
  /** argv after `polyquant` for shard 0 … N−1: `sweep MODEL --out DIR --shard I/N [--preset P]`. */
  readonly shardRuns: readonly (readonly string[])[];
  /** argv after `polyquant`: `sweep merge DIR… --out DIR`, the glob over shard folders expanded. */
  readonly merge: readonly string[];
  /** argv after `polyquant`: `sweep report DIR --markdown FILE`. */
  readonly report: readonly string[];
}

export interface ExampleSweepOptions {
  /** The model folder, in place of the example's MODEL. */
  readonly model: string;
  /** GitHub Actions only: the evaluation text in place of the example's TEXT (default: the input's default, relative). */
  readonly text?: string;
  /**
   * Kubernetes only: the folder standing in for the shared claim's mount path (`/sweep`); by default the
   * mount path itself. GitHub Actions paths are relative: run them all in one working directory.
   */
  readonly volume?: string;
}

type Yaml = Record<string, unknown>;

function object(value: unknown, what: string): Yaml {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${what} is not a mapping`);
  return value as Yaml;
}

function list(value: unknown, what: string): unknown[] {
  if (!Array.isArray(value)) throw new Error(`${what} is not a list`);
  return value;
}

function text(value: unknown, what: string): string {
  if (typeof value !== 'string') throw new Error(`${what} is not a string`);
  return value;
}

export function readGithubActionsExample(): Yaml {
  return object(parse(readFileSync(GITHUB_ACTIONS_EXAMPLE, 'utf8')), GITHUB_ACTIONS_EXAMPLE);
}

/** The Kubernetes example's documents, in file order; `source` replaces the file's text (for edited copies). */
export function readKubernetesExample(source = readFileSync(KUBERNETES_EXAMPLE, 'utf8')): Yaml[] {
  return parseAllDocuments(source).map((document, index) => {
    if (document.errors.length > 0) throw new Error(`document ${index}: ${document.errors.map((error) => error.message).join('; ')}`);
    return object(document.toJS(), `document ${index}`);
  });
}

/** Every `polyquant sweep` command in both examples, verbatim, in file order. */
export function exampleSweepCommandLines(): ExampleCommandLine[] {
  const lines: ExampleCommandLine[] = [];
  const jobs = object(readGithubActionsExample()['jobs'], 'jobs');
  for (const [jobId, job] of Object.entries(jobs)) {
    list(object(job, jobId)['steps'], `${jobId}.steps`).forEach((step, index) => {
      const run = object(step, `${jobId}.steps[${index}]`)['run'];
      if (typeof run !== 'string') return;
      for (const line of sweepCommandsIn(run)) lines.push({ example: 'github-actions', where: `jobs.${jobId}.steps[${index}].run`, line });
    });
  }
  for (const { job, container, index } of kubernetesContainers(readKubernetesExample())) {
    for (const line of sweepCommandsIn(shellScript(container, `${jobName(job)}: containers[${index}]`))) {
      lines.push({ example: 'kubernetes', where: `Job ${jobName(job)}: containers[${index}].args[0]`, line });
    }
  }
  return lines;
}

/** The GitHub Actions example's sweep for `model`: the matrix's shards, then the merge job's commands. */
export function githubActionsSweep(options: ExampleSweepOptions): ExampleSweep {
  const workflow = readGithubActionsExample();
  const jobs = object(workflow['jobs'], 'jobs');
  const presetInput = object(object(object(object(workflow['on'], 'on')['workflow_dispatch'], 'workflow_dispatch')['inputs'], 'inputs')['preset'], 'preset');
  const inputs = object(object(object(workflow['on'], 'on')['workflow_dispatch'], 'workflow_dispatch')['inputs'], 'inputs');
  const variables = {
    MODEL: options.model,
    TEXT: options.text ?? text(object(inputs['text'], 'text')['default'], 'text default'),
    PRESET: text(presetInput['default'], 'preset default'),
  };

  const shardJob = object(jobs['shard'], 'jobs.shard');
  const matrix = list(object(object(shardJob['strategy'], 'strategy')['matrix'], 'matrix')['shard'], 'matrix.shard').map((value) => {
    if (!Number.isSafeInteger(value)) throw new Error(`matrix.shard holds ${String(value)}; expected integers`);
    return value as number;
  });
  const shardRuns = matrix.map((shard) => {
    const expressions = { 'matrix.shard': String(shard), 'strategy.job-total': String(matrix.length) };
    const commands = runSteps(shardJob, 'jobs.shard').flatMap(sweepCommandsIn);
    const line = only(commands, 'jobs.shard: sweep commands');
    return tokenize(substituteExpressions(line, expressions), variables).map((word) => word.text);
  });

  const mergeCommands = runSteps(object(jobs['merge'], 'jobs.merge'), 'jobs.merge')
    .flatMap(sweepCommandsIn)
    .map((line) => tokenize(substituteExpressions(line, {}), variables));
  return finish('github-actions', shardRuns, mergeCommands, (argument) => argument);
}

/** The Kubernetes example's sweep for `model`: one run per completion index, then the merge Job's commands. */
export function kubernetesSweep(options: ExampleSweepOptions): ExampleSweep {
  return kubernetesSweepOf(readKubernetesExample(), options);
}

/** As kubernetesSweep, over documents given (an edited copy of the example). */
export function kubernetesSweepOf(documents: readonly Yaml[], options: ExampleSweepOptions): ExampleSweep {
  const containers = kubernetesContainers(documents);
  const indexed = containers.filter(({ job }) => object(job['spec'], 'spec')['completionMode'] === 'Indexed');
  const { job, container } = only(indexed, 'Indexed Jobs');
  const completions = object(job['spec'], 'spec')['completions'];
  if (!Number.isSafeInteger(completions)) throw new Error(`${jobName(job)}: completions is ${String(completions)}`);
  const mountPath = text(object(list(container['volumeMounts'], 'volumeMounts')[0], 'volumeMounts[0]')['mountPath'], 'mountPath');
  const volume = options.volume ?? mountPath;
  const relocate = (argument: string): string => (argument === mountPath || argument.startsWith(`${mountPath}/`) ? volume + argument.slice(mountPath.length) : argument);

  const shardRuns = Array.from({ length: completions as number }, (_, index) => {
    const variables = { ...containerEnvironment(container), MODEL: options.model, JOB_COMPLETION_INDEX: String(index) };
    const line = only(sweepCommandsIn(shellScript(container, jobName(job))), `${jobName(job)}: sweep commands`);
    return tokenize(line, variables).map((word) => relocate(word.text));
  });
  const mergeCommands = containers
    .filter((entry) => entry.job !== job)
    .flatMap((entry) => sweepCommandsIn(shellScript(entry.container, jobName(entry.job))).map((line) => tokenize(line, containerEnvironment(entry.container))));
  return finish('kubernetes', shardRuns, mergeCommands, relocate);
}

/** Puts the merge and report commands after the shard runs, expanding the merge's glob over the shard folders. */
function finish(
  example: ExampleSweep['example'],
  shardRuns: readonly (readonly string[])[],
  later: readonly Word[][],
  relocate: (argument: string) => string,
): ExampleSweep {
  const shardFolders = shardRuns.map((argv) => {
    const at = argv.indexOf('--out');
    if (at < 0 || argv[at + 1] === undefined) throw new Error(`a shard run has no --out: ${argv.join(' ')}`);
    return argv[at + 1]!;
  });
  const expand = (argv: readonly Word[]): string[] =>
    argv.flatMap((word) => {
      if (!word.glob) return [relocate(word.text)];
      const pattern = globPattern(relocate(word.text));
      const matches = shardFolders.filter((folder) => pattern.test(folder)).sort();
      if (matches.length === 0) throw new Error(`${word.text} matches no shard folder (${shardFolders.join(', ')})`);
      return matches;
    });
  const merge = only(later.filter((argv) => argv[1]?.text === 'merge'), 'sweep merge commands');
  const report = only(later.filter((argv) => argv[1]?.text === 'report'), 'sweep report commands');
  return {
    example,
    shards: shardRuns.length,
    shardRuns: shardRuns.map((argv) => [...argv]),
    merge: expand(merge),
    report: expand(report),
  };
}

interface Word {
  readonly text: string;
  /** An unquoted `*` or `?` was in it: the shell would expand it. */
  readonly glob: boolean;
}

function only<T>(items: readonly T[], what: string): T {
  if (items.length !== 1) throw new Error(`expected exactly one of ${what}, found ${items.length}`);
  return items[0]!;
}

/** A shell glob of `*` and `?` (no brackets: tokenize refuses them) as an anchored regular expression. */
function globPattern(glob: string): RegExp {
  const source = [...glob].map((char) => (char === '*' ? '[^/]*' : char === '?' ? '[^/]' : char.replace(/[.+^${}()|[\]\\]/g, '\\$&'))).join('');
  return new RegExp(`^${source}$`);
}

function runSteps(job: Yaml, where: string): string[] {
  return list(job['steps'], `${where}.steps`)
    .map((step, index) => object(step, `${where}.steps[${index}]`)['run'])
    .filter((run): run is string => typeof run === 'string');
}

function jobName(job: Yaml): string {
  return text(object(job['metadata'], 'metadata')['name'], 'metadata.name');
}

function kubernetesContainers(documents: readonly Yaml[]): { job: Yaml; container: Yaml; index: number }[] {
  return documents
    .filter((document) => document['kind'] === 'Job')
    .flatMap((job) => {
      const podSpec = object(object(object(job['spec'], 'spec')['template'], 'template')['spec'], 'template.spec');
      return list(podSpec['containers'], 'containers').map((container, index) => ({ job, container: object(container, `containers[${index}]`), index }));
    });
}

/** The script of a `[/bin/sh, -c]` container: the examples run every command through a shell. */
function shellScript(container: Yaml, where: string): string {
  const command = list(container['command'], `${where}: command`);
  if (command.length !== 2 || command[0] !== '/bin/sh' || command[1] !== '-c') throw new Error(`${where}: command is not [/bin/sh, -c]`);
  return text(only(list(container['args'], `${where}: args`), `${where}: args`), `${where}: args[0]`);
}

function containerEnvironment(container: Yaml): Record<string, string> {
  const environment: Record<string, string> = {};
  for (const entry of (container['env'] as unknown[] | undefined) ?? []) {
    const variable = object(entry, 'env entry');
    if (typeof variable['value'] === 'string') environment[text(variable['name'], 'env name')] = variable['value'];
  }
  return environment;
}

/** Replaces GitHub's `${{ expression }}` by the values given; an expression not given is an error. */
function substituteExpressions(script: string, values: Readonly<Record<string, string>>): string {
  return script.replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_, expression: string) => {
    const value = values[expression];
    if (value === undefined) throw new Error(`no value for the expression \${{ ${expression} }} in: ${script}`);
    return value;
  });
}

/**
 * The verbatim text of each `polyquant sweep` command in a script: the script split at newlines and `&&`
 * (the examples put neither inside quotes), keeping the commands that run `polyquant sweep`.
 */
function sweepCommandsIn(script: string): string[] {
  return script
    .split(/\n|&&/)
    .map((part) => part.trim())
    .filter((part) => /^(exec\s+)?(npx\s+)?polyquant\s+sweep\b/.test(part));
}

/**
 * The words of one `polyquant sweep` command after `polyquant` (a leading `exec` and `npx` dropped), with the
 * variables given expanded. Refuses any shell syntax beyond quotes and parameter expansion.
 */
function tokenize(line: string, variables: Readonly<Record<string, string>>): Word[] {
  const result: Word[] = [];
  let word = '';
  let inWord = false;
  let glob = false;
  const endWord = (): void => {
    if (inWord) result.push({ text: word, glob });
    word = '';
    inWord = false;
    glob = false;
  };
  const lookup = (name: string): string => {
    const value = variables[name];
    if (value === undefined) throw new Error(`no value for $${name} in: ${line}`);
    return value;
  };
  /** Expands the `$…` at `at`: returns its value and the index after it. */
  const expand = (at: number): [string, number] => {
    const rest = line.slice(at);
    const arithmetic = /^\$\(\(\s*([A-Za-z_]\w*)\s*([+-])\s*(\d+)\s*\)\)/.exec(rest);
    if (arithmetic !== null) {
      const base = Number(lookup(arithmetic[1]!));
      const offset = Number(arithmetic[3]!);
      return [String(arithmetic[2] === '+' ? base + offset : base - offset), at + arithmetic[0].length];
    }
    const braced = /^\$\{([A-Za-z_]\w*)\}/.exec(rest);
    if (braced !== null) return [lookup(braced[1]!), at + braced[0].length];
    const plain = /^\$([A-Za-z_]\w*)/.exec(rest);
    if (plain !== null) return [lookup(plain[1]!), at + plain[0].length];
    throw new Error(`unsupported expansion "${rest.slice(0, 20)}" in: ${line}`);
  };

  let index = 0;
  while (index < line.length) {
    const char = line[index]!;
    if (char === ' ' || char === '\t') {
      endWord();
      index++;
    } else if (char === "'") {
      const close = line.indexOf("'", index + 1);
      if (close < 0) throw new Error(`unclosed ' in: ${line}`);
      word += line.slice(index + 1, close);
      inWord = true;
      index = close + 1;
    } else if (char === '"') {
      inWord = true;
      index++;
      while (line[index] !== '"') {
        if (index >= line.length) throw new Error(`unclosed " in: ${line}`);
        const inner = line[index]!;
        if (inner === '$') {
          const [value, next] = expand(index);
          word += value;
          index = next;
        } else if (inner === '\\' && '"\\$`'.includes(line[index + 1] ?? '')) {
          word += line[index + 1];
          index += 2;
        } else if (inner === '`') {
          throw new Error(`command substitution in: ${line}`);
        } else {
          word += inner;
          index++;
        }
      }
      index++;
    } else if (char === '$') {
      const [value, next] = expand(index);
      word += value;
      inWord = true;
      index = next;
    } else if ('|&;<>`(){}[]\\#~'.includes(char)) {
      throw new Error(`unsupported shell syntax "${char}" in: ${line}`);
    } else {
      if (char === '*' || char === '?') glob = true;
      word += char;
      inWord = true;
      index++;
    }
  }
  endWord();
  let start = 0;
  if (result[start]?.text === 'exec') start++;
  if (result[start]?.text === 'npx') start++;
  if (result[start]?.text !== 'polyquant') throw new Error(`not a polyquant command: ${line}`);
  return result.slice(start + 1);
}
