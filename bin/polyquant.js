#!/usr/bin/env node
// The CLI runs from the compiled dist/ (built by `npm ci` through the prepare script).
import '../dist/cli/bin.js';
