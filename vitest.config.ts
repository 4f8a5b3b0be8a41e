import { readFile } from 'node:fs/promises';
import { defineConfig } from 'vitest/config';
import SummaryReporter from './test/summary-reporter.js';

/**
 * @actions/workflow-parser (test/sweep-examples.test.ts) imports its schema JSON without `with { type:
 * 'json' }`, which Node's own loader refuses (actions/languageservices#387), so it runs through Vite's
 * transform (server.deps.inline below). Its files name source maps whose sources the package does not
 * ship, and Vite would warn once per file: load them without the map comment.
 */
const WORKFLOW_PARSER = '/node_modules/@actions/workflow-parser/';

export default defineConfig({
  plugins: [
    {
      name: 'polyquant:workflow-parser-without-source-maps',
      enforce: 'pre',
      async load(id) {
        if (!id.includes(WORKFLOW_PARSER) || !id.endsWith('.js')) return null;
        return { code: (await readFile(id, 'utf8')).replace(/^\/\/# sourceMappingURL=.*$/m, ''), map: null };
      },
    },
  ],
  test: {
    include: ['test/**/*.test.ts'],
    reporters: ['default', new SummaryReporter()],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Two cores: more forks only thrash.
    maxWorkers: 2,
    server: { deps: { inline: ['@actions/workflow-parser'] } },
  },
});
