/**
 * The metrics the polyglot branch reports for KOBEST (lm_eval/tasks/kobest.py `process_results` and
 * `aggregation`, lm_eval/metrics.py): `acc` (mean of argmax == gold), `macro_f1` (sklearn's
 * `f1_score(golds, preds, average='macro')`), HellaSwag's `acc_norm`, and `mean_stderr` for the accuracies.
 */

/**
 * `np.argmax`: the first index of the maximum; a NaN counts as the maximum (numpy returns the first NaN),
 * so a broken score shows up as a prediction instead of being skipped. −1 for an empty list.
 */
export function argmax(values: readonly number[]): number {
  let best = -1;
  let bestValue = Number.NEGATIVE_INFINITY;
  for (let index = 0; index < values.length; index++) {
    const value = values[index]!;
    if (Number.isNaN(value)) return index;
    if (best === -1 || value > bestValue) {
      best = index;
      bestValue = value;
    }
  }
  return best;
}

/** Mean of `pred === gold`; NaN for no documents (the harness would divide by zero). */
export function accuracy(golds: readonly number[], preds: readonly number[]): number {
  checkPaired(golds, preds);
  let correct = 0;
  for (let index = 0; index < golds.length; index++) if (golds[index] === preds[index]) correct++;
  return correct / golds.length;
}

/**
 * sklearn `f1_score(y_true, y_pred, average='macro')`: the labels are the sorted union of those in golds
 * and preds (a class the model never predicts still counts, with F1 0; a class in neither does not);
 * per label precision = tp / (tp + fp) and recall = tp / (tp + fn), each 0 when its denominator is
 * (sklearn's zero_division default), F1 = 2·P·R / (P + R) or 0; the result is their plain mean.
 * This P/R form (sklearn before 1.4 computed it this way) reproduces the reference fixture to the last
 * bit, where 2·tp / (2·tp + fp + fn) differs in the last place (kobest-validation-limit200.json, copa 5-shot).
 */
export function macroF1(golds: readonly number[], preds: readonly number[]): number {
  checkPaired(golds, preds);
  if (golds.length === 0) return Number.NaN;
  const labels = [...new Set([...golds, ...preds])].sort((a, b) => a - b);
  let sum = 0;
  for (const label of labels) {
    let truePositives = 0;
    let falsePositives = 0;
    let falseNegatives = 0;
    for (let index = 0; index < golds.length; index++) {
      const isGold = golds[index] === label;
      const isPred = preds[index] === label;
      if (isGold && isPred) truePositives++;
      else if (isPred) falsePositives++;
      else if (isGold) falseNegatives++;
    }
    const precision = truePositives + falsePositives === 0 ? 0 : truePositives / (truePositives + falsePositives);
    const recall = truePositives + falseNegatives === 0 ? 0 : truePositives / (truePositives + falseNegatives);
    sum += precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  }
  return sum / labels.length;
}

/**
 * lm_eval.metrics `mean_stderr`: sample standard deviation (n − 1) over √n, for a list of 0/1 scores.
 * NaN below two items.
 */
export function meanStderr(values: readonly number[]): number {
  const n = values.length;
  if (n < 2) return Number.NaN;
  let total = 0;
  for (const value of values) total += value;
  const mean = total / n;
  let squares = 0;
  for (const value of values) squares += (value - mean) ** 2;
  return Math.sqrt(squares / (n - 1)) / Math.sqrt(n);
}

function checkPaired(golds: readonly number[], preds: readonly number[]): void {
  if (golds.length !== preds.length) {
    throw new RangeError(`golds (${golds.length}) and preds (${preds.length}) differ in length`);
  }
}
