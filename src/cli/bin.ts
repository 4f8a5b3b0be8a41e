import { main } from './main.js';
import { installInterruptCleanup } from './signals.js';

installInterruptCleanup();
process.exitCode = await main(process.argv.slice(2));
