/** The prompt whose last-position logits the page publishes (test/webgpu-browser.test.ts scores it in Node too). */
export const FIXED_PROMPT = '한국어 언어 모델은 서울에서';
