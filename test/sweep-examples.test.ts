/**
 * The distributed-sweep examples (examples/github-actions/sweep.yml, examples/kubernetes/sweep-job.yaml):
 * both parse as YAML and pass a check of their own platform's schema, and the `polyquant sweep` commands
 * they run (test/helpers/sweep-examples.ts, which the sweep's own tests use to run them) name only the
 * subcommands and flags of issue #12.
 *
 * Checkers: GitHub's own workflow parser (@actions/workflow-parser, the one behind the Actions VS Code
 * extension: its workflow schema, job graph and expression syntax), and the Kubernetes OpenAPI schemas
 * compiled by kubernetes-models (types, required fields, enums, quantities). The OpenAPI schemas allow
 * unknown fields (the API server's strict field validation rejects them), so the fields the sweep relies
 * on are asserted here one by one.
 */
import { readFileSync } from 'node:fs';
import { convertWorkflowTemplate, NoOperationTraceWriter, parseWorkflow } from '@actions/workflow-parser';
import { type IJob, Job } from 'kubernetes-models/batch/v1';
import { type IPersistentVolumeClaim, PersistentVolumeClaim } from 'kubernetes-models/v1';
import { describe, expect, it } from 'vitest';
import {
  exampleSweepCommandLines,
  GITHUB_ACTIONS_EXAMPLE,
  githubActionsSweep,
  KUBERNETES_EXAMPLE,
  kubernetesSweep,
  kubernetesSweepOf,
  readGithubActionsExample,
  readKubernetesExample,
} from './helpers/sweep-examples.js';

/** GitHub Actions expressions as the workflow writes them. */
const SHARD = `\${{ matrix.shard }}`;
const SHARDS = `\${{ strategy.job-total }}`;

/** The workflow parser's errors for `content` (schema, job graph, expressions); empty when it is valid. */
async function workflowErrors(content: string): Promise<string[]> {
  const result = parseWorkflow({ name: 'sweep.yml', content }, new NoOperationTraceWriter());
  const parseErrors = result.context.errors.getErrors().map((error) => error.message);
  if (result.value === undefined) return parseErrors;
  const template = await convertWorkflowTemplate(result.context, result.value);
  return [...new Set([...parseErrors, ...(template.errors ?? []).map((error) => error.Message)])];
}

/** The schema errors of each Kubernetes document, by kind (only the kinds the example uses). */
function kubernetesErrors(documents: readonly Record<string, unknown>[]): string[] {
  const errors: string[] = [];
  for (const document of documents) {
    const name = `${String(document['kind'])} ${String((document['metadata'] as { name?: unknown } | undefined)?.name)}`;
    try {
      if (document['kind'] === 'Job') new Job(document).validate();
      else if (document['kind'] === 'PersistentVolumeClaim') new PersistentVolumeClaim(document).validate();
      else errors.push(`${name}: a kind the example should not have`);
    } catch (error) {
      errors.push(`${name}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return errors;
}

/**
 * Checks one sweep command against the CLI of issue #12: `sweep MODEL --out DIR --shard I/N
 * [--preset quick|release]`, `sweep merge DIR… --out DIR`, `sweep report DIR --markdown FILE`. Returns its kind.
 */
function checkSweepArgv(argv: readonly string[]): 'run' | 'merge' | 'report' {
  expect(argv[0]).toBe('sweep');
  const positional: string[] = [];
  const flags = new Map<string, string>();
  for (let index = 1; index < argv.length; index++) {
    const argument = argv[index]!;
    if (argument.startsWith('--')) {
      const value = argv[index + 1];
      expect(value, `${argument} has a value`).toBeDefined();
      expect(value!.startsWith('--'), `${argument} has a value`).toBe(false);
      expect(flags.has(argument), `${argument} given once`).toBe(false);
      flags.set(argument, value!);
      index++;
    } else {
      positional.push(argument);
    }
  }
  if (positional[0] === 'merge') {
    expect(positional.length).toBeGreaterThanOrEqual(2);
    expect([...flags.keys()]).toEqual(['--out']);
    return 'merge';
  }
  if (positional[0] === 'report') {
    expect(positional).toHaveLength(2);
    expect([...flags.keys()]).toEqual(['--markdown']);
    return 'report';
  }
  expect(positional).toHaveLength(1);
  expect([...flags.keys()].sort()).toEqual(flags.has('--preset') ? ['--out', '--ppl', '--preset', '--shard'] : ['--out', '--ppl', '--shard']);
  expect(flags.get('--shard')).toMatch(/^\d+\/\d+$/);
  if (flags.has('--preset')) expect(['quick', 'release']).toContain(flags.get('--preset'));
  return 'run';
}

describe('the GitHub Actions example', () => {
  const source = readFileSync(GITHUB_ACTIONS_EXAMPLE, 'utf8');

  it("passes GitHub's workflow parser: schema, job graph and expressions", async () => {
    expect(await workflowErrors(source)).toEqual([]);
  });

  it('is really checked: an unknown key, a bad needs and a broken expression are reported', async () => {
    expect((await workflowErrors(source.replace('      fail-fast: false', '      fail-fast: false\n      parallel: 3'))).join('\n')).toContain(
      "Unexpected value 'parallel'",
    );
    expect((await workflowErrors(source.replace('    needs: shard', '    needs: shards'))).join('\n')).toContain("unknown job 'shards'");
    expect((await workflowErrors(source.replace("if: ${{ !cancelled() && hashFiles('report.md')", "if: ${{ !cancelled( && hashFiles('report.md')"))).length).toBeGreaterThan(0);
  });

  it('runs one shard per matrix entry, uploads each as an artifact the merge job downloads, and gates on the report', () => {
    const workflow = readGithubActionsExample();
    const jobs = workflow['jobs'] as Record<string, Record<string, unknown>>;
    const shard = jobs['shard']!;
    const merge = jobs['merge']!;
    expect((shard['strategy'] as { matrix: { shard: number[] } }).matrix.shard).toEqual([0, 1, 2]);
    expect((shard['strategy'] as { 'fail-fast': boolean })['fail-fast']).toBe(false);
    expect(merge['needs']).toBe('shard');

    type Step = { uses?: string; run?: string; with?: Record<string, unknown>; if?: string; env?: Record<string, string>; 'continue-on-error'?: unknown };
    const shardSteps = shard['steps'] as Step[];
    const mergeSteps = merge['steps'] as Step[];
    const upload = shardSteps.find((step) => step.uses?.startsWith('actions/upload-artifact@'));
    expect(upload?.with).toMatchObject({ name: `cells-${SHARD}`, path: `cells-${SHARD}`, 'if-no-files-found': 'error' });
    const download = mergeSteps.find((step) => step.uses?.startsWith('actions/download-artifact@'));
    expect(download?.with).toEqual({ pattern: 'cells-*', path: '.' });
    expect(workflow['env']).toMatchObject({ ONNXRUNTIME_NODE_INSTALL: 'skip' });
    for (const steps of [shardSteps, mergeSteps]) {
      expect(steps.some((step) => step.uses?.startsWith('actions/setup-node@'))).toBe(true);
      expect(steps.some((step) => step.run === 'npm ci')).toBe(true);
    }
    expect(shardSteps.some((step) => /apt-get install .*chromium.*libvulkan1/.test(step.run ?? ''))).toBe(true);

    // The report step's exit status is the job's: nothing swallows it.
    const report = mergeSteps.find((step) => step.run?.includes('polyquant sweep report'));
    expect(report?.['continue-on-error']).toBeUndefined();
    expect(report?.if).toBeUndefined();
    // The summary and the plot are published whether or not the report passed.
    const summary = mergeSteps.find((step) => step.run?.includes('$GITHUB_STEP_SUMMARY'));
    expect(summary?.run).toBe('cat report.md >> "$GITHUB_STEP_SUMMARY"');
    expect(summary?.if).toContain('!cancelled()');
    const plot = mergeSteps.find((step) => step.uses?.startsWith('actions/upload-artifact@'));
    expect(plot?.if).toContain('!cancelled()');
    expect(String(plot?.with?.['path'])).toContain('merged/**/*.png');
  });
});

describe('the Kubernetes example', () => {
  const documents = readKubernetesExample();

  it('passes the Kubernetes OpenAPI schema (batch/v1 Job, v1 PersistentVolumeClaim)', () => {
    expect(documents.map((document) => `${String(document['apiVersion'])} ${String(document['kind'])}`)).toEqual([
      'v1 PersistentVolumeClaim',
      'batch/v1 Job',
      'batch/v1 Job',
    ]);
    expect(kubernetesErrors(documents)).toEqual([]);
  });

  it('is really checked: a wrong completion mode and a quantity that is not one are reported', () => {
    const source = readFileSync(KUBERNETES_EXAMPLE, 'utf8');
    expect(kubernetesErrors(readKubernetesExample(source.replace('completionMode: Indexed', 'completionMode: Indexd'))).join('\n')).toContain('completionMode');
    expect(kubernetesErrors(readKubernetesExample(source.replace('memory: 16Gi', 'memory: lots'))).join('\n')).toContain('memory');
  });

  it('runs an Indexed Job of N shards on the shared claim and a suspended merge Job on the same claim', () => {
    const claim = documents[0] as unknown as IPersistentVolumeClaim;
    const sweep = documents[1] as unknown as IJob;
    const merge = documents[2] as unknown as IJob;
    expect(claim.spec?.accessModes).toEqual(['ReadWriteMany']);
    expect(sweep.spec?.completionMode).toBe('Indexed');
    expect(sweep.spec?.parallelism).toBe(sweep.spec?.completions);
    const shards = sweep.spec?.template.spec?.containers[0]?.env?.find((variable) => variable.name === 'SHARDS');
    expect(Number(shards?.value)).toBe(sweep.spec?.completions);
    expect(merge.spec?.suspend).toBe(true);
    expect(merge.spec?.backoffLimit).toBe(0);
    for (const job of [sweep, merge]) {
      const pod = job.spec?.template.spec;
      expect(pod?.restartPolicy).toBe('Never');
      expect(pod?.volumes).toEqual([{ name: 'sweep', persistentVolumeClaim: { claimName: claim.metadata?.name } }]);
      expect(pod?.containers[0]?.volumeMounts).toEqual([{ name: 'sweep', mountPath: '/sweep' }]);
    }
  });

  it('maps JOB_COMPLETION_INDEX to --shard I/N from 0, and the one-line sed in its comments moves that to 1', () => {
    const source = readFileSync(KUBERNETES_EXAMPLE, 'utf8');
    const sed = /sed -i 's\/(.+?)\/(.+?)\/' sweep-job\.yaml/.exec(source);
    expect(sed).not.toBeNull();
    const edited = source.split(sed![1]!).join(sed![2]!);
    expect(edited).not.toBe(source);
    const shardsOf = (run: { shardRuns: readonly (readonly string[])[] }): string[] => run.shardRuns.map((argv) => argv[argv.indexOf('--shard') + 1]!);
    expect(shardsOf(kubernetesSweep({ model: 'm' }))).toEqual(['0/3', '1/3', '2/3']);
    expect(shardsOf(kubernetesSweepOf(readKubernetesExample(edited), { model: 'm' }))).toEqual(['1/3', '2/3', '3/3']);
  });
});

describe('the sweep commands the examples run', () => {
  it('are found verbatim in both files', () => {
    expect(exampleSweepCommandLines()).toEqual([
      {
        example: 'github-actions',
        where: 'jobs.shard.steps[4].run',
        line: `npx polyquant sweep "$MODEL" --ppl "$TEXT" --out cells-${SHARD} --shard ${SHARD}/${SHARDS} --preset "$PRESET"`,
      },
      { example: 'github-actions', where: 'jobs.merge.steps[4].run', line: 'npx polyquant sweep merge cells-* --out merged' },
      { example: 'github-actions', where: 'jobs.merge.steps[5].run', line: 'npx polyquant sweep report merged --markdown report.md' },
      {
        example: 'kubernetes',
        where: 'Job polyquant-sweep: containers[0].args[0]',
        line: 'exec polyquant sweep "$MODEL" --ppl "$TEXT" --out "/sweep/cells-$JOB_COMPLETION_INDEX" --shard "$((JOB_COMPLETION_INDEX + 0))/$SHARDS" --preset quick',
      },
      { example: 'kubernetes', where: 'Job polyquant-sweep-merge: containers[0].args[0]', line: 'polyquant sweep merge /sweep/cells-* --out /sweep/merged' },
      {
        example: 'kubernetes',
        where: 'Job polyquant-sweep-merge: containers[0].args[0]',
        line: 'exec polyquant sweep report /sweep/merged --markdown /sweep/report.md',
      },
    ]);
  });

  it('instantiate the GitHub Actions sweep: three shards in one working directory, then merge and report', () => {
    expect(githubActionsSweep({ model: 'models/tiny' })).toEqual({
      example: 'github-actions',
      shards: 3,
      shardRuns: [
        ['sweep', 'models/tiny', '--ppl', 'data/valid.txt', '--out', 'cells-0', '--shard', '0/3', '--preset', 'quick'],
        ['sweep', 'models/tiny', '--ppl', 'data/valid.txt', '--out', 'cells-1', '--shard', '1/3', '--preset', 'quick'],
        ['sweep', 'models/tiny', '--ppl', 'data/valid.txt', '--out', 'cells-2', '--shard', '2/3', '--preset', 'quick'],
      ],
      merge: ['sweep', 'merge', 'cells-0', 'cells-1', 'cells-2', '--out', 'merged'],
      report: ['sweep', 'report', 'merged', '--markdown', 'report.md'],
    });
  });

  it('instantiate the Kubernetes sweep with the claim moved to a local folder', () => {
    expect(kubernetesSweep({ model: '/models/tiny', volume: '/tmp/claim' })).toEqual({
      example: 'kubernetes',
      shards: 3,
      shardRuns: [
        ['sweep', '/models/tiny', '--ppl', '/tmp/claim/valid.txt', '--out', '/tmp/claim/cells-0', '--shard', '0/3', '--preset', 'quick'],
        ['sweep', '/models/tiny', '--ppl', '/tmp/claim/valid.txt', '--out', '/tmp/claim/cells-1', '--shard', '1/3', '--preset', 'quick'],
        ['sweep', '/models/tiny', '--ppl', '/tmp/claim/valid.txt', '--out', '/tmp/claim/cells-2', '--shard', '2/3', '--preset', 'quick'],
      ],
      merge: ['sweep', 'merge', '/tmp/claim/cells-0', '/tmp/claim/cells-1', '/tmp/claim/cells-2', '--out', '/tmp/claim/merged'],
      report: ['sweep', 'report', '/tmp/claim/merged', '--markdown', '/tmp/claim/report.md'],
    });
  });

  it("name only sweep's subcommands and flags, cover shards 0 … N−1 once each, and merge exactly the shards' folders", () => {
    for (const run of [githubActionsSweep({ model: 'm' }), kubernetesSweep({ model: 'm' })]) {
      const outs = run.shardRuns.map((argv) => {
        expect(checkSweepArgv(argv)).toBe('run');
        expect(argv[1]).toBe('m');
        return argv[argv.indexOf('--out') + 1]!;
      });
      expect(run.shardRuns.map((argv) => argv[argv.indexOf('--shard') + 1])).toEqual(Array.from({ length: run.shards }, (_, index) => `${index}/${run.shards}`));
      expect(new Set(outs).size).toBe(run.shards);
      expect(checkSweepArgv(run.merge)).toBe('merge');
      expect(run.merge.slice(2, -2)).toEqual(outs);
      const merged = run.merge.at(-1)!;
      expect(checkSweepArgv(run.report)).toBe('report');
      expect(run.report[2]).toBe(merged);
      // Every preset is the same across shards: the shards of one sweep must agree on its settings.
      expect(new Set(run.shardRuns.map((argv) => argv.filter((_, index) => index !== argv.indexOf('--out') + 1 && index !== argv.indexOf('--shard') + 1).join(' '))).size).toBe(1);
    }
  });
});
