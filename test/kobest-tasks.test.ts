import { describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { loadTokenizer, readTokenizerFiles } from '../src/readers/tokenizer.js';
import { loadKobestSplit } from '../src/verify/kobest/load.js';
import { buildKobestRequests, fewshotContext, planKobest, resolveLimit } from '../src/verify/kobest/requests.js';
import {
  type BoolqDocument,
  KOBEST_TASK_NAMES,
  KOBEST_TASKS,
  type KobestDocuments,
  type KobestTask,
  type KobestTaskName,
  pythonLength,
  pythonStrip,
  type SentinegDocument,
} from '../src/verify/kobest/tasks.js';
import { KOBEST_DATA_DIR } from './helpers/kobest-reference.js';
import { HAS_SHARED, POLYGLOT_DATA_DIR } from './helpers/shared.js';

async function firstValidation<Name extends KobestTaskName>(task: Name, idx = 0): Promise<KobestDocuments[Name]> {
  return (await loadKobestSplit(KOBEST_DATA_DIR, task, 'validation')).documents[idx]!;
}

describe.skipIf(!HAS_SHARED)('the polyglot-branch prompts on real validation documents (specs/eval.md §2a)', () => {
  it('builds BoolQ as "{paragraph} 질문: {question} 답변: " with the trailing space, scoring " 아니오" / " 예"', async () => {
    const document = await firstValidation('boolq');
    const task = KOBEST_TASKS.boolq;
    expect(task.docToText(document)).toBe(
      '구한말, 통영 안뒤산 기슭 간창골에 김봉제 형제가 살았다. 김봉제는 관약국을 경영하며 부를 누렸는데, 선비적 성품을 지녔던 형과 ' +
        '반대로 막냇동생 김봉룡은 성질이 포악했다. 어느 날 봉룡은 아내였던 숙정을 사모하던 나그네를 살해하였고, 숙정은 누명을 ' +
        '벗으려고 비상을 먹고 자살한다. 질문: 봉룡은 숙정을 죽였는가? 답변: ',
    );
    expect(task.continuations(document)).toEqual([' 아니오', ' 예']);
    expect(task.docToTarget(document)).toBe(' 아니오');
  });

  it('builds COPA as premise + " 그래서" for an effect and " 왜냐하면" for a cause, scoring " " + each alternative', async () => {
    const task = KOBEST_TASKS.copa;
    const effect = await firstValidation('copa', 0);
    expect(task.docToText(effect)).toBe('전쟁이 시작되었다. 그래서');
    expect(task.continuations(effect)).toEqual([' 병사들이 집으로 돌아왔다.', ' 병사들이 전투에 파견되었다.']);
    expect(task.docToTarget(effect)).toBe(' 병사들이 전투에 파견되었다.');
    const cause = await firstValidation('copa', 3);
    expect(task.docToText(cause)).toBe('차가 찌그러졌다. 왜냐하면');
    expect(task.docToText({ ...cause, question: '원인 ' })).toBe('차가 찌그러졌다. 왜냐하면');
  });

  it('builds WiC with both bracketed sentences and the bare word', async () => {
    const document = await firstValidation('wic');
    expect(KOBEST_TASKS.wic.docToText(document)).toBe(
      '문장1: 백제는 의자왕의 방탕과 [실정]으로 패망했다고 보는 견해가 있다. ' +
        '문장2: 지금 회사는 자금난으로 공장을 운영할 수 없는 [실정]이다. 두 문장에서 실정가 같은 뜻으로 쓰였나?',
    );
    expect(KOBEST_TASKS.wic.continuations(document)).toEqual([' 아니오', ' 예']);
  });

  it('builds HellaSwag as "문장: {context}" scoring " " + each ending, normalizing by the bare ending', async () => {
    const document = await firstValidation('hellaswag');
    const task = KOBEST_TASKS.hellaswag;
    expect(task.docToText(document)).toBe(
      '문장: 모자를 쓴 투수가 타자에게 온 힘을 다해 공을 던진다. 공이 타자에게 빠른 속도로 다가온다. 타자가 공을 배트로 친다. ' +
        '배트에서 깡 소리가 난다. 공이 하늘 위로 날아간다.',
    );
    expect(task.continuations(document)).toEqual([
      ' 외야수가 떨어지는 공을 글러브로 잡는다.',
      ' 외야수가 공이 떨어질 위치에 자리를 잡는다.',
      ' 심판이 아웃을 외친다.',
      ' 외야수가 공을 따라 뛰기 시작한다.',
    ]);
    expect(task.docToTarget(document)).toBe(' 외야수가 공을 따라 뛰기 시작한다.');
    expect(task.normalizationTexts!(document).map(pythonLength)).toEqual([22, 24, 12, 19]);
  });

  it('builds SentiNeg as "문장: {sentence} 긍부정:" scoring " 부정" / " 긍정"', async () => {
    const document = await firstValidation('sentineg', 1);
    expect(KOBEST_TASKS.sentineg.docToText(document)).toBe('문장: 착한 가격에 좋은 제품 구입했어요 긍부정:');
    expect(KOBEST_TASKS.sentineg.continuations(document)).toEqual([' 부정', ' 긍정']);
    expect(KOBEST_TASKS.sentineg.docToTarget(document)).toBe(' 긍정');
  });

  it('uses continuations[label] as the few-shot target for every train document of every task', async () => {
    const check = async <Name extends KobestTaskName>(name: Name): Promise<number> => {
      const task: KobestTask<Name> = KOBEST_TASKS[name];
      const { documents } = await loadKobestSplit(KOBEST_DATA_DIR, name, 'train');
      return documents.filter((document) => task.docToTarget(document) !== task.continuations(document)[document.label])
        .length;
    };
    for (const name of KOBEST_TASK_NAMES) expect(await check(name), name).toBe(0);
  });

  it('tokenizes the answer words to the ids specs/eval.md lists, and BoolQ contexts end in Ġ (224)', async () => {
    const tokenizer = loadTokenizer(await readTokenizerFiles(POLYGLOT_DATA_DIR));
    const ids = (text: string): number[] => [...tokenizer.encode(text)];
    expect(ids(' 예')).toEqual([566]);
    expect(ids(' 아니오')).toEqual([769, 638]);
    expect(ids(' 긍정')).toEqual([3562]);
    expect(ids(' 부정')).toEqual([2907]);
    const context = ids(KOBEST_TASKS.boolq.docToText(await firstValidation('boolq')));
    expect(context.at(-1)).toBe(224);
  });

  it('prompts 5-shot BoolQ validation with train examples drawn by the same Random(42) after the shuffle', async () => {
    const documents = (await loadKobestSplit(KOBEST_DATA_DIR, 'boolq', 'validation')).documents;
    const train = (await loadKobestSplit(KOBEST_DATA_DIR, 'boolq', 'train')).documents;
    const requests = buildKobestRequests({ task: 'boolq', documents, train, shots: 5, limit: 3 });
    const plan = planKobest({ documentCount: 700, trainCount: 3665, shots: 5, limit: 3 });
    expect(requests.map((request) => request.document.idx)).toEqual(plan.order);
    // The reference fixture's first three validation documents (doc_idx).
    expect(plan.order).toEqual([415, 508, 243]);
    const first = requests[0]!;
    expect(first.fewshotIdx).toEqual(plan.fewshot[0]);
    const examples = first.fewshotIdx.map((idx) => train[idx]!);
    const expected = [
      ...examples.map((example) => `${example.paragraph} 질문: ${example.question} 답변:  ${example.label === 1 ? '예' : '아니오'}`),
      `${first.document.paragraph} 질문: ${first.document.question} 답변: `,
    ].join('\n\n');
    expect(first.context).toBe(expected);
  });
});

describe('few-shot contexts', () => {
  const sentence = (text: string, label: number, idx = 0): SentinegDocument => ({ idx, id: null, label, sentence: text });

  it('is doc_to_text alone at 0 shots', () => {
    expect(fewshotContext(KOBEST_TASKS.sentineg, sentence('좋아요', 1), [])).toBe('문장: 좋아요 긍부정:');
  });

  it('joins doc_to_text + doc_to_target of each example with "\\n\\n" and ends with "\\n\\n" + the document', () => {
    const context = fewshotContext(KOBEST_TASKS.sentineg, sentence('그냥 그래요', 0), [
      sentence('최고예요', 1),
      sentence('별로예요', 0),
    ]);
    expect(context).toBe('문장: 최고예요 긍부정: 긍정\n\n문장: 별로예요 긍부정: 부정\n\n문장: 그냥 그래요 긍부정:');
  });

  it('keeps BoolQ\'s double space between "답변: " and the target, as the harness does', () => {
    const example: BoolqDocument = { idx: 0, id: 1, label: 1, paragraph: '지문', question: '질문' };
    const document: BoolqDocument = { ...example, paragraph: '다른 지문' };
    expect(fewshotContext(KOBEST_TASKS.boolq, document, [example])).toBe('지문 질문: 질문 답변:  예\n\n다른 지문 질문: 질문 답변: ');
  });
});

describe('document plans (evaluator.py shuffle, --limit, fewshot_examples)', () => {
  it('reads --limit as a count, or as a fraction below 1, capped at the split', () => {
    expect(resolveLimit(undefined, 700)).toBe(700);
    expect(resolveLimit(200, 700)).toBe(200);
    expect(resolveLimit(200.9, 700)).toBe(200);
    expect(resolveLimit(5000, 700)).toBe(700);
    expect(resolveLimit(0.5, 701)).toBe(350);
    expect(resolveLimit(0, 700)).toBe(0);
    expect(() => resolveLimit(-1, 700)).toThrow(PolyquantError);
  });

  it('keeps the first N of the full shuffle, so --limit never changes which documents come first', () => {
    const full = planKobest({ documentCount: 500, trainCount: 100, shots: 5 });
    const limited = planKobest({ documentCount: 500, trainCount: 100, shots: 5, limit: 20 });
    expect(limited.order).toEqual(full.order.slice(0, 20));
    expect(limited.fewshot).toEqual(full.fewshot.slice(0, 20));
  });

  it('draws from train without excluding the evaluated document, so evaluating train can show a document itself', () => {
    const plan = planKobest({ documentCount: 30, trainCount: 30, shots: 5 });
    const selfShots = plan.order.filter((position, index) => plan.fewshot[index]!.includes(position));
    expect(selfShots.length).toBeGreaterThan(0);
  });

  it('refuses more shots than training documents', () => {
    let error: unknown;
    try {
      planKobest({ documentCount: 10, trainCount: 4, shots: 5 });
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).code).toBe(ERROR_CODES.USAGE);
  });
});

describe('Python string helpers', () => {
  it('strips what str.strip() strips, not what String.prototype.trim does', () => {
    expect(pythonStrip(' \t원인 \u3000')).toBe('원인');
    expect(pythonStrip('\u001c결과\u0085')).toBe('결과');
    expect(pythonStrip('\uFEFF원인')).toBe('\uFEFF원인');
  });

  it('counts code points like len()', () => {
    expect(pythonLength('심판이 아웃을 외친다.')).toBe(12);
    expect(pythonLength('😀a')).toBe(2);
  });
});
