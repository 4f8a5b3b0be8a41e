// polyquant's scoring addon over the llama.cpp that node-llama-cpp ships (its prebuilt libllama, the
// headers of its bundled source). It exists for one reason: node-llama-cpp has no logits accessor, and
// reading a next-token distribution through it builds a vocabulary-sized JS array per position on the JS
// thread (~20 ms for a 30k vocabulary). Here llama_decode and everything per scored position — log-softmax,
// the target's log-probability, argmax, and the full log-probability row when it is wanted — run on a
// worker thread, written straight into typed arrays the caller owns. Per position, JS sees a few numbers.
//
// Two builds (scripts/build-native.mjs). By default the addon links node-llama-cpp's prebuilt libraries by
// soname: node-llama-cpp's getLlama() has already loaded the libllama it chose (CPU, CUDA or Vulkan
// build), and the dynamic loader resolves our NEEDED libllama.v0.4.0.so to that loaded copy; the RUNPATH
// is only a fallback. With --from-source it links a llama.cpp built from node-llama-cpp's bundled source
// for this machine (GGML_NATIVE, optionally CUDA/Vulkan), found through its RUNPATH, and node-llama-cpp
// is not loaded at all.
//
// Interface (all from src/verify/engines/llamacpp-native.ts, which checks every argument first):
//   devices() → [{ name, description, type }]      quietLogs(level)      allocateRows(floats) → Float32Array
//   loadModel(path, gpuLayers, cpuOnly) → Promise<model>        freeModel(model)
//   modelInfo(model) → { vocab, ctxTrain, layers, params, gpuLayers, devices }
//   tokenize(model, text, parseSpecial) → Int32Array
//   createContext(model, nCtx, nBatch, nSeqMax, threads, cpuOnly, flashAttention[, imatrix 0|1|2]) → context
//   freeContext(context)   imatrixEntries(context) → { entries: [{ name, sums: Float64Array, count }], nonFinite }
//   contextInfo(context) → { nCtx, nBatch, nSeqMax, threads }
//   decode(context, tokens, positions, seqMasks, logits, outIndex, outTarget, outLogProb, outArgmax,
//          outFullRow, full) → Promise<void>
//   seqRemove(context, seq, p0, p1) → boolean                   memoryClear(context)
//   klDivergence(base, candidate, vocab, rows, out) → Promise<void>
#include <node_api.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sys/mman.h>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "llama.h"

namespace {

// ---- N-API plumbing ---------------------------------------------------------------------------------

#define NAPI_CALL(env, call)                                                        \
  do {                                                                              \
    napi_status status_ = (call);                                                   \
    if (status_ != napi_ok) {                                                       \
      const napi_extended_error_info *info_ = nullptr;                              \
      napi_get_last_error_info((env), &info_);                                      \
      bool pending_ = false;                                                        \
      napi_is_exception_pending((env), &pending_);                                  \
      if (!pending_) {                                                              \
        napi_throw_error((env), nullptr,                                            \
                         info_ && info_->error_message ? info_->error_message      \
                                                       : "N-API call failed");      \
      }                                                                             \
      return nullptr;                                                               \
    }                                                                               \
  } while (0)

napi_value throwError(napi_env env, const std::string &message) {
  napi_throw_error(env, nullptr, message.c_str());
  return nullptr;
}

bool getArgs(napi_env env, napi_callback_info info, size_t expected, napi_value *argv) {
  size_t argc = expected;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < expected) {
    napi_throw_type_error(env, nullptr, "polyquant-llama: too few arguments");
    return false;
  }
  return true;
}

bool getInt(napi_env env, napi_value value, int64_t *out) {
  return napi_get_value_int64(env, value, out) == napi_ok;
}

bool getBool(napi_env env, napi_value value, bool *out) { return napi_get_value_bool(env, value, out) == napi_ok; }

/** A JS string as UTF-8. */
bool getString(napi_env env, napi_value value, std::string *out) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &length) != napi_ok) return false;
  out->assign(length, '\0');
  return napi_get_value_string_utf8(env, value, out->data(), length + 1, &length) == napi_ok;
}

/** A typed array's data pointer and length, checked to be of the expected element type (or null). */
template <typename T>
bool getTypedArray(napi_env env, napi_value value, napi_typedarray_type type, T **data, size_t *length,
                   bool nullable = false) {
  napi_valuetype kind;
  if (napi_typeof(env, value, &kind) != napi_ok) return false;
  if (nullable && (kind == napi_null || kind == napi_undefined)) {
    *data = nullptr;
    *length = 0;
    return true;
  }
  bool isTyped = false;
  if (napi_is_typedarray(env, value, &isTyped) != napi_ok || !isTyped) return false;
  napi_typedarray_type actual;
  void *raw = nullptr;
  if (napi_get_typedarray_info(env, value, &actual, length, &raw, nullptr, nullptr) != napi_ok) return false;
  if (actual != type) return false;
  *data = static_cast<T *>(raw);
  return true;
}

/** Rejects `deferred` with an Error carrying `message` (and a numeric `status`, when given). */
void rejectWith(napi_env env, napi_deferred deferred, const std::string &message, const int32_t *status = nullptr) {
  napi_value text, error;
  napi_create_string_utf8(env, message.c_str(), NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, nullptr, text, &error);
  if (status != nullptr) {
    napi_value code;
    napi_create_int32(env, *status, &code);
    napi_set_named_property(env, error, "status", code);
  }
  napi_reject_deferred(env, deferred, error);
}

/** Queues `execute` on libuv's pool and returns the promise `complete` settles (work->deferred, work->work). */
template <typename Work>
napi_value queueWork(napi_env env, const char *name, Work *work, napi_async_execute_callback execute, napi_async_complete_callback complete) {
  napi_value promise, resource;
  NAPI_CALL(env, napi_create_promise(env, &work->deferred, &promise));
  NAPI_CALL(env, napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource));
  NAPI_CALL(env, napi_create_async_work(env, nullptr, resource, execute, complete, work, &work->work));
  NAPI_CALL(env, napi_queue_async_work(env, work->work));
  return promise;
}

// ---- model and context handles -----------------------------------------------------------------------

struct Model {
  llama_model *model = nullptr;
  const llama_vocab *vocab = nullptr;
  int32_t nVocab = 0;
  int32_t gpuLayers = 0;
  std::atomic<int> contexts{0};
};

/**
 * An importance matrix as llama-imatrix collects it (tools/imatrix/imatrix.cpp collect_imatrix, dense
 * weights): for every MUL_MAT whose weight is a `blk.*` tensor (and `output.weight` when asked) over at
 * least 16 float32 input rows, Σ x² per input column and the rows counted. Summed in double (llama-imatrix
 * sums in float); called by llama.cpp's scheduler on the decoding thread, read on the JS thread only when
 * the context is not decoding.
 */
struct ImatrixCollector {
  struct Entry {
    std::vector<double> sums;
    int64_t count = 0;
  };
  bool output = false;
  std::map<std::string, Entry> entries;
  std::vector<char> copy;    // inputs that live off the host (a GPU buffer) are copied here
  std::string nonFinite;     // the first tensor whose sums stopped being finite
  std::mutex mutex;
};

/** `filter_tensor_name`: the weight's name without ggml's `#…#` decorations. */
std::string weightName(const char *name) {
  const char *p = std::strchr(name, '#');
  if (p == nullptr) return name;
  p += 1;
  const char *q = std::strchr(p, '#');
  return q == nullptr ? std::string(p) : std::string(p, q - p);
}

bool collectImatrix(ggml_tensor *t, bool ask, void *data) {
  auto *collector = static_cast<ImatrixCollector *>(data);
  const ggml_tensor *src0 = t->src[0];
  const ggml_tensor *src1 = t->src[1];
  if (ask) {
    if (t->op != GGML_OP_MUL_MAT || src0 == nullptr || src1 == nullptr) return false;
    if (src1->ne[1] < 16 || src1->type != GGML_TYPE_F32) return false;
    const std::string name = weightName(src0->name);
    return name.rfind("blk.", 0) == 0 || (collector->output && name == "output.weight");
  }
  // Asked for it: collect, and return true (false would stop the graph).
  std::lock_guard<std::mutex> lock(collector->mutex);
  const bool host = src1->buffer == nullptr || ggml_backend_buffer_is_host(src1->buffer);
  if (!host) {
    collector->copy.resize(ggml_nbytes(src1));
    ggml_backend_tensor_get(src1, collector->copy.data(), 0, ggml_nbytes(src1));
  }
  const char *base = host ? static_cast<const char *>(src1->data) : collector->copy.data();
  const std::string name = weightName(src0->name);
  auto &entry = collector->entries[name];
  const int64_t columns = src1->ne[0];
  const int64_t matrices = src0->ne[2] * src0->ne[3];
  if (entry.sums.empty()) entry.sums.assign(static_cast<size_t>(columns * matrices), 0.0);
  for (int64_t i3 = 0; i3 < src1->ne[3]; i3 += 1) {
    for (int64_t i2 = 0; i2 < src1->ne[2]; i2 += 1) {
      const int64_t matrix = (i3 % src0->ne[3]) * src0->ne[2] + (i2 % src0->ne[2]);
      double *sums = entry.sums.data() + matrix * columns;
      for (int64_t row = 0; row < src1->ne[1]; row += 1) {
        const auto *x = reinterpret_cast<const float *>(base + row * src1->nb[1] + i2 * src1->nb[2] + i3 * src1->nb[3]);
        for (int64_t j = 0; j < columns; j += 1) sums[j] += static_cast<double>(x[j]) * static_cast<double>(x[j]);
      }
    }
  }
  entry.count += ggml_nrows(src1) / matrices;
  if (collector->nonFinite.empty()) {
    for (double value : entry.sums) {
      if (!std::isfinite(value)) {
        collector->nonFinite = name;
        break;
      }
    }
  }
  return true;
}

struct Context {
  std::unique_ptr<ImatrixCollector> imatrix;  // set at creation when asked; llama.cpp's cb_eval points at it
  llama_context *ctx = nullptr;
  Model *model = nullptr;
  napi_ref modelRef = nullptr;  // keeps the model's JS handle (and so the model) alive
  int32_t nBatch = 0;
  int32_t nSeqMax = 0;
  int32_t threads = 1;
  llama_batch batch{};
  bool busy = false;
};

void freeModelNow(Model *model) {
  if (model->model != nullptr) {
    llama_model_free(model->model);
    model->model = nullptr;
  }
}

void finalizeModel(napi_env, void *data, void *) {
  auto *model = static_cast<Model *>(data);
  freeModelNow(model);
  delete model;
}

void freeContextNow(napi_env env, Context *context) {
  if (context->ctx != nullptr) {
    llama_batch_free(context->batch);
    llama_free(context->ctx);
    context->ctx = nullptr;
    context->model->contexts -= 1;
  }
  if (context->modelRef != nullptr && env != nullptr) {
    napi_delete_reference(env, context->modelRef);
    context->modelRef = nullptr;
  }
}

void finalizeContext(napi_env env, void *data, void *) {
  auto *context = static_cast<Context *>(data);
  freeContextNow(env, context);
  delete context;
}

/** The handle behind a napi external, or a thrown JS error when it is not one or its object was freed. */
template <typename Handle>
Handle *getHandle(napi_env env, napi_value value, const char *what, bool (*live)(const Handle *)) {
  void *data = nullptr;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == nullptr) {
    napi_throw_type_error(env, nullptr, (std::string("polyquant-llama: expected a ") + what + " handle").c_str());
    return nullptr;
  }
  auto *handle = static_cast<Handle *>(data);
  if (!live(handle)) {
    napi_throw_error(env, nullptr, (std::string("polyquant-llama: the ") + what + " was freed").c_str());
    return nullptr;
  }
  return handle;
}

Model *getModel(napi_env env, napi_value value) {
  return getHandle<Model>(env, value, "model", [](const Model *model) { return model->model != nullptr; });
}

Context *getContext(napi_env env, napi_value value) {
  return getHandle<Context>(env, value, "context", [](const Context *context) { return context->ctx != nullptr; });
}

/** The CPU device alone, NULL-terminated: what `cpuOnly` models and contexts are restricted to. */
ggml_backend_dev_t cpuDevices[2] = {nullptr, nullptr};

bool resolveCpuDevice() {
  if (cpuDevices[0] == nullptr) cpuDevices[0] = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  return cpuDevices[0] != nullptr;
}

// ---- loadModel ---------------------------------------------------------------------------------------

struct LoadWork {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  std::string path;
  int32_t gpuLayers = 0;
  bool cpuOnly = false;
  llama_model *model = nullptr;
  std::string error;
};

void loadExecute(napi_env, void *data) {
  auto *load = static_cast<LoadWork *>(data);
  llama_model_params params = llama_model_default_params();
  params.n_gpu_layers = load->cpuOnly ? 0 : load->gpuLayers;
  if (load->cpuOnly) {
    if (!resolveCpuDevice()) {
      load->error = "no CPU backend is registered (node-llama-cpp must load its backends first)";
      return;
    }
    params.devices = cpuDevices;
  }
  params.use_extra_bufts = true;
  load->model = llama_model_load_from_file(load->path.c_str(), params);
  if (load->model == nullptr) load->error = "llama_model_load_from_file failed (llama.cpp's log says why)";
}

void loadComplete(napi_env env, napi_status, void *data) {
  auto *load = static_cast<LoadWork *>(data);
  if (load->model == nullptr) {
    rejectWith(env, load->deferred, load->error);
  } else {
    auto *model = new Model();
    model->model = load->model;
    model->vocab = llama_model_get_vocab(load->model);
    model->nVocab = llama_vocab_n_tokens(model->vocab);
    model->gpuLayers = load->cpuOnly ? 0 : load->gpuLayers;
    napi_value handle;
    if (napi_create_external(env, model, finalizeModel, nullptr, &handle) != napi_ok) {
      freeModelNow(model);
      delete model;
      rejectWith(env, load->deferred, "could not create the model handle");
    } else {
      napi_resolve_deferred(env, load->deferred, handle);
    }
  }
  napi_delete_async_work(env, load->work);
  delete load;
}

napi_value LoadModel(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!getArgs(env, info, 3, argv)) return nullptr;
  std::string path;
  int64_t gpuLayers = 0;
  bool cpuOnly = true;
  if (!getString(env, argv[0], &path) || !getInt(env, argv[1], &gpuLayers) || !getBool(env, argv[2], &cpuOnly)) {
    return throwError(env, "polyquant-llama: loadModel(path, gpuLayers, cpuOnly)");
  }
  auto *load = new LoadWork();
  load->path = path;
  load->gpuLayers = static_cast<int32_t>(std::clamp<int64_t>(gpuLayers, -1, INT32_MAX));
  load->cpuOnly = cpuOnly;
  return queueWork(env, "polyquant.loadModel", load, loadExecute, loadComplete);
}

napi_value FreeModel(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv)) return nullptr;
  void *data = nullptr;
  NAPI_CALL(env, napi_get_value_external(env, argv[0], &data));
  auto *model = static_cast<Model *>(data);
  if (model->contexts > 0) return throwError(env, "polyquant-llama: free the model's contexts first");
  freeModelNow(model);
  return nullptr;
}

napi_value setNumber(napi_env env, napi_value object, const char *key, double value) {
  napi_value number;
  NAPI_CALL(env, napi_create_double(env, value, &number));
  NAPI_CALL(env, napi_set_named_property(env, object, key, number));
  return object;
}

napi_value ModelInfo(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv)) return nullptr;
  Model *model = getModel(env, argv[0]);
  if (model == nullptr) return nullptr;
  napi_value result;
  NAPI_CALL(env, napi_create_object(env, &result));
  setNumber(env, result, "vocab", model->nVocab);
  setNumber(env, result, "ctxTrain", llama_model_n_ctx_train(model->model));
  setNumber(env, result, "layers", llama_model_n_layer(model->model));
  setNumber(env, result, "params", static_cast<double>(llama_model_n_params(model->model)));
  setNumber(env, result, "gpuLayers", model->gpuLayers);
  // The devices llama.cpp registered (CPU, CUDA0, Vulkan0, …): the report names the one used.
  napi_value devices;
  NAPI_CALL(env, napi_create_array(env, &devices));
  for (size_t i = 0; i < ggml_backend_dev_count(); i += 1) {
    ggml_backend_dev_t device = ggml_backend_dev_get(i);
    std::string text = std::string(ggml_backend_dev_name(device)) + ": " + ggml_backend_dev_description(device);
    napi_value entry;
    NAPI_CALL(env, napi_create_string_utf8(env, text.c_str(), NAPI_AUTO_LENGTH, &entry));
    NAPI_CALL(env, napi_set_element(env, devices, static_cast<uint32_t>(i), entry));
  }
  NAPI_CALL(env, napi_set_named_property(env, result, "devices", devices));
  return result;
}

napi_value Tokenize(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!getArgs(env, info, 3, argv)) return nullptr;
  Model *model = getModel(env, argv[0]);
  if (model == nullptr) return nullptr;
  std::string text;
  bool parseSpecial = true;
  if (!getString(env, argv[1], &text) || !getBool(env, argv[2], &parseSpecial)) {
    return throwError(env, "polyquant-llama: tokenize(model, text, parseSpecial)");
  }
  if (text.size() > static_cast<size_t>(INT32_MAX)) return throwError(env, "polyquant-llama: text longer than 2 GiB");
  // llama_tokenize reports the needed size as a negative count when the buffer is too small.
  std::vector<llama_token> tokens(text.size() + 2);
  int32_t n = llama_tokenize(model->vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                             static_cast<int32_t>(tokens.size()), false, parseSpecial);
  if (n < 0 && n != INT32_MIN) {
    tokens.resize(static_cast<size_t>(-n));
    n = llama_tokenize(model->vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                       static_cast<int32_t>(tokens.size()), false, parseSpecial);
  }
  if (n < 0) return throwError(env, "polyquant-llama: llama_tokenize failed");
  napi_value buffer, array;
  void *raw = nullptr;
  NAPI_CALL(env, napi_create_arraybuffer(env, static_cast<size_t>(n) * sizeof(int32_t), &raw, &buffer));
  if (n > 0) std::memcpy(raw, tokens.data(), static_cast<size_t>(n) * sizeof(int32_t));
  NAPI_CALL(env, napi_create_typedarray(env, napi_int32_array, static_cast<size_t>(n), buffer, 0, &array));
  return array;
}

// ---- contexts ------------------------------------------------------------------------------------------

napi_value CreateContext(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  size_t argc = 8;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 7) {
    napi_throw_type_error(env, nullptr, "polyquant-llama: too few arguments");
    return nullptr;
  }
  // The optional 8th argument: 0 no importance matrix, 1 collect the blocks' weights, 2 and output.weight.
  int64_t imatrix = 0;
  if (argc >= 8 && (!getInt(env, argv[7], &imatrix) || imatrix < 0 || imatrix > 2)) {
    return throwError(env, "polyquant-llama: createContext's imatrix argument is 0, 1 or 2");
  }
  Model *model = getModel(env, argv[0]);
  if (model == nullptr) return nullptr;
  int64_t nCtx = 0, nBatch = 0, nSeqMax = 0, threads = 0;
  bool cpuOnly = true, flashAttention = true;
  if (!getInt(env, argv[1], &nCtx) || !getInt(env, argv[2], &nBatch) || !getInt(env, argv[3], &nSeqMax) ||
      !getInt(env, argv[4], &threads) || !getBool(env, argv[5], &cpuOnly) || !getBool(env, argv[6], &flashAttention) ||
      nCtx < 1 || nBatch < 1 || nSeqMax < 1 || nSeqMax > 32 || threads < 1) {
    return throwError(env, "polyquant-llama: createContext(model, nCtx, nBatch, nSeqMax 1..32, threads, cpuOnly, flashAttention)");
  }
  llama_context_params params = llama_context_default_params();
  params.n_ctx = static_cast<uint32_t>(nCtx);
  params.n_batch = static_cast<uint32_t>(nBatch);
  params.n_ubatch = static_cast<uint32_t>(nBatch);
  params.n_seq_max = static_cast<uint32_t>(nSeqMax);
  params.n_threads = static_cast<int32_t>(threads);
  params.n_threads_batch = static_cast<int32_t>(threads);
  // auto: llama.cpp's own default (its tools run with it), on wherever the backend supports it.
  params.flash_attn_type = flashAttention ? LLAMA_FLASH_ATTN_TYPE_AUTO : LLAMA_FLASH_ATTN_TYPE_DISABLED;
  params.no_perf = true;
  // One KV buffer for every sequence: a KOBEST context is decoded once, tagged with the sequence of each
  // of its continuations, which llama.cpp allows only with a unified cache.
  params.kv_unified = true;
  params.swa_full = true;
  if (cpuOnly) {
    params.offload_kqv = false;
    params.op_offload = false;
  }
  std::unique_ptr<ImatrixCollector> collector;
  if (imatrix > 0) {
    collector = std::make_unique<ImatrixCollector>();
    collector->output = imatrix == 2;
    params.cb_eval = collectImatrix;
    params.cb_eval_user_data = collector.get();
  }
  llama_context *ctx = llama_init_from_model(model->model, params);
  if (ctx == nullptr) return throwError(env, "llama_init_from_model failed (llama.cpp's log says why)");
  auto *context = new Context();
  context->imatrix = std::move(collector);
  context->ctx = ctx;
  context->model = model;
  context->nBatch = static_cast<int32_t>(nBatch);
  context->nSeqMax = static_cast<int32_t>(nSeqMax);
  context->threads = static_cast<int32_t>(threads);
  context->batch = llama_batch_init(context->nBatch, 0, context->nSeqMax);
  model->contexts += 1;
  NAPI_CALL(env, napi_create_reference(env, argv[0], 1, &context->modelRef));
  napi_value handle;
  NAPI_CALL(env, napi_create_external(env, context, finalizeContext, nullptr, &handle));
  return handle;
}

napi_value FreeContext(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv)) return nullptr;
  void *data = nullptr;
  NAPI_CALL(env, napi_get_value_external(env, argv[0], &data));
  auto *context = static_cast<Context *>(data);
  if (context->busy) return throwError(env, "polyquant-llama: the context is decoding");
  freeContextNow(env, context);
  return nullptr;
}

napi_value ContextInfo(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv)) return nullptr;
  Context *context = getContext(env, argv[0]);
  if (context == nullptr) return nullptr;
  napi_value result;
  NAPI_CALL(env, napi_create_object(env, &result));
  setNumber(env, result, "nCtx", llama_n_ctx(context->ctx));
  setNumber(env, result, "nBatch", llama_n_batch(context->ctx));
  setNumber(env, result, "nSeqMax", llama_n_seq_max(context->ctx));
  setNumber(env, result, "threads", llama_n_threads(context->ctx));
  return result;
}

napi_value SeqRemove(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!getArgs(env, info, 4, argv)) return nullptr;
  Context *context = getContext(env, argv[0]);
  if (context == nullptr) return nullptr;
  if (context->busy) return throwError(env, "polyquant-llama: the context is decoding");
  int64_t seq = 0, p0 = 0, p1 = 0;
  if (!getInt(env, argv[1], &seq) || !getInt(env, argv[2], &p0) || !getInt(env, argv[3], &p1)) {
    return throwError(env, "polyquant-llama: seqRemove(context, seq, p0, p1)");
  }
  bool removed = llama_memory_seq_rm(llama_get_memory(context->ctx), static_cast<llama_seq_id>(seq),
                                     static_cast<llama_pos>(p0), static_cast<llama_pos>(p1));
  napi_value result;
  NAPI_CALL(env, napi_get_boolean(env, removed, &result));
  return result;
}

napi_value MemoryClear(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv)) return nullptr;
  Context *context = getContext(env, argv[0]);
  if (context == nullptr) return nullptr;
  if (context->busy) return throwError(env, "polyquant-llama: the context is decoding");
  llama_memory_clear(llama_get_memory(context->ctx), true);
  return nullptr;
}

napi_value ImatrixEntries(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv)) return nullptr;
  Context *context = getContext(env, argv[0]);
  if (context == nullptr) return nullptr;
  if (context->busy) return throwError(env, "polyquant-llama: the context is decoding");
  if (!context->imatrix) return throwError(env, "polyquant-llama: the context was created without an importance matrix");
  ImatrixCollector &collector = *context->imatrix;
  napi_value result, list;
  NAPI_CALL(env, napi_create_object(env, &result));
  NAPI_CALL(env, napi_create_array_with_length(env, collector.entries.size(), &list));
  uint32_t index = 0;
  for (const auto &[name, entry] : collector.entries) {
    napi_value item, text, buffer, sums;
    NAPI_CALL(env, napi_create_object(env, &item));
    NAPI_CALL(env, napi_create_string_utf8(env, name.c_str(), name.size(), &text));
    NAPI_CALL(env, napi_set_named_property(env, item, "name", text));
    void *raw = nullptr;
    NAPI_CALL(env, napi_create_arraybuffer(env, entry.sums.size() * sizeof(double), &raw, &buffer));
    std::memcpy(raw, entry.sums.data(), entry.sums.size() * sizeof(double));
    NAPI_CALL(env, napi_create_typedarray(env, napi_float64_array, entry.sums.size(), buffer, 0, &sums));
    NAPI_CALL(env, napi_set_named_property(env, item, "sums", sums));
    setNumber(env, item, "count", static_cast<double>(entry.count));
    NAPI_CALL(env, napi_set_element(env, list, index++, item));
  }
  NAPI_CALL(env, napi_set_named_property(env, result, "entries", list));
  napi_value nonFinite;
  if (collector.nonFinite.empty()) NAPI_CALL(env, napi_get_null(env, &nonFinite));
  else NAPI_CALL(env, napi_create_string_utf8(env, collector.nonFinite.c_str(), collector.nonFinite.size(), &nonFinite));
  NAPI_CALL(env, napi_set_named_property(env, result, "nonFinite", nonFinite));
  return result;
}

// ---- per-position statistics ------------------------------------------------------------------------

// Eight floats (or ints, or four doubles) at a time with GCC's vector extensions: the same operations in the
// same order on every target (SSE2 lowers them in halves, AVX2 at full width; target_clones picks at load
// time), and -ffp-contract=off keeps FMA out, so the numbers do not depend on the machine.
typedef float v8sf __attribute__((vector_size(32)));
typedef int32_t v8si __attribute__((vector_size(32)));
typedef float v4sf __attribute__((vector_size(16)));
typedef double v4df __attribute__((vector_size(32)));

/**
 * e^x for x ≤ 0 (Cephes' expf: x = k·ln 2 + r, a degree-6 polynomial in r, 2^k from the exponent bits);
 * relative error below 1e-7 against exp in double over [−87, 0] (checked in the tests through the sums).
 * Below −87 it returns e^−87 ≈ 1.6e−38: a term that can never move a sum that holds e^0 = 1.
 */
__attribute__((always_inline)) inline v8sf expNonPositive(v8sf x) {
  const v8sf low = {-87.f, -87.f, -87.f, -87.f, -87.f, -87.f, -87.f, -87.f};
  x = x < low ? low : x;
  const v8sf fx = x * 1.44269504088896341f + 0.5f;
  v8sf kf = __builtin_convertvector(__builtin_convertvector(fx, v8si), v8sf);
  kf = kf > fx ? kf - 1.0f : kf;  // floor, as truncation rounds negative values up
  const v8sf r = x - kf * 0.693359375f - kf * -2.12194440e-4f;
  v8sf p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const v8si bits = (__builtin_convertvector(kf, v8si) + 127) << 23;
  v8sf scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/** Loads 8 floats from x[i …], padding past n with `fill`. */
__attribute__((always_inline)) inline v8sf load8(const float *x, int32_t i, int32_t n, float fill) {
  v8sf v;
  if (i + 8 <= n) {
    std::memcpy(&v, x + i, sizeof v);
  } else {
    for (int32_t j = 0; j < 8; j += 1) v[j] = i + j < n ? x[i + j] : fill;
  }
  return v;
}

/** max of a row; NaN entries are skipped here (the sum below turns them into NaN). */
__attribute__((target_clones("avx2", "default"))) float rowMax(const float *x, int32_t n) {
  v8sf best = load8(x, 0, n, -INFINITY);
  for (int32_t i = 8; i < n; i += 8) {
    const v8sf v = load8(x, i, n, -INFINITY);
    best = v > best ? v : best;
  }
  float m = best[0];
  for (int32_t j = 1; j < 8; j += 1) m = best[j] > m ? best[j] : m;
  return m;
}

/** Σ e^(x − m) in double (two four-lane accumulators, a fixed order). */
__attribute__((target_clones("avx2", "default"))) double sumExp(const float *x, int32_t n, float m) {
  v4df low = {0, 0, 0, 0};
  v4df high = {0, 0, 0, 0};
  for (int32_t i = 0; i < n; i += 8) {
    const v8sf e = expNonPositive(load8(x, i, n, -INFINITY) - m);
    low += __builtin_convertvector(__builtin_shufflevector(e, e, 0, 1, 2, 3), v4df);
    high += __builtin_convertvector(__builtin_shufflevector(e, e, 4, 5, 6, 7), v4df);
  }
  return ((low[0] + high[0]) + (low[1] + high[1])) + ((low[2] + high[2]) + (low[3] + high[3]));
}

/** out[i] = (x[i] − m) − logSum, computed in double, stored as float. */
__attribute__((target_clones("avx2", "default"))) void writeLogProbs(const float *x, int32_t n, float m, double logSum, float *out) {
  int32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8sf v;
    std::memcpy(&v, x + i, sizeof v);
    const v8sf d = v - m;
    const v4sf low = __builtin_convertvector(__builtin_convertvector(__builtin_shufflevector(d, d, 0, 1, 2, 3), v4df) - logSum, v4sf);
    const v4sf high = __builtin_convertvector(__builtin_convertvector(__builtin_shufflevector(d, d, 4, 5, 6, 7), v4df) - logSum, v4sf);
    std::memcpy(out + i, &low, sizeof low);
    std::memcpy(out + i + 4, &high, sizeof high);
  }
  for (; i < n; i += 1) out[i] = static_cast<float>(static_cast<double>(x[i] - m) - logSum);
}

/**
 * log-softmax of one logits row as llama-perplexity computes it (the max, Σ e^(x − max) in double, its
 * log), vectorised: the target's log-probability, the argmax (first on ties, as torch.argmax), and
 * optionally the whole row of log-probabilities as float32. A non-finite logit makes the results NaN,
 * never a number that looks fine.
 */
void rowStatistics(const float *logits, int32_t vocab, int32_t target, double *logProb, int32_t *argmax, float *fullRow) {
  const float maximum = rowMax(logits, vocab);
  int32_t best = 0;
  while (best < vocab - 1 && !(logits[best] == maximum)) best += 1;
  *argmax = best;
  const double sum = std::isfinite(maximum) ? sumExp(logits, vocab, maximum) : NAN;
  if (!std::isfinite(sum)) {
    *logProb = NAN;
    if (fullRow != nullptr) std::fill(fullRow, fullRow + vocab, NAN);
    return;
  }
  const double logSum = std::log(sum);
  // Rounded to float32 like the full row, so a target's log-probability is the same number whether or not
  // the row is asked for (and the row's entry at the target equals it).
  *logProb = target >= 0 ? static_cast<double>(static_cast<float>(static_cast<double>(logits[target] - maximum) - logSum)) : 0;
  if (fullRow != nullptr) writeLogProbs(logits, vocab, maximum, logSum, fullRow);
}

/** Runs body(i) for i in [0, count) on `threads` threads (the calling one included). */
template <typename Body>
void parallelFor(int32_t count, int32_t threads, const Body &body) {
  threads = std::max(1, std::min(threads, count));
  if (threads == 1) {
    for (int32_t i = 0; i < count; i += 1) body(i);
    return;
  }
  std::atomic<int32_t> next{0};
  auto run = [&]() {
    for (int32_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) body(i);
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int32_t t = 1; t < threads; t += 1) pool.emplace_back(run);
  run();
  for (auto &thread : pool) thread.join();
}

// ---- decode ------------------------------------------------------------------------------------------

/** The typed arrays a decode reads and writes, kept alive (referenced) while it runs. */
struct DecodeWork {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  Context *context = nullptr;
  std::vector<napi_ref> refs;
  const int32_t *tokens = nullptr;
  const int32_t *positions = nullptr;
  const uint32_t *seqMasks = nullptr;
  const uint8_t *logits = nullptr;
  int32_t nTokens = 0;
  const int32_t *outIndex = nullptr;
  const int32_t *outTarget = nullptr;
  double *outLogProb = nullptr;
  int32_t *outArgmax = nullptr;
  const int32_t *outFullRow = nullptr;
  float *full = nullptr;
  int32_t nOut = 0;
  int32_t status = 0;
  std::string error;
};

void decodeExecute(napi_env, void *data) {
  auto *work = static_cast<DecodeWork *>(data);
  Context *context = work->context;
  llama_batch &batch = context->batch;
  batch.n_tokens = work->nTokens;
  for (int32_t i = 0; i < work->nTokens; i += 1) {
    batch.token[i] = work->tokens[i];
    batch.pos[i] = work->positions[i];
    int32_t n = 0;
    for (uint32_t mask = work->seqMasks[i], seq = 0; mask != 0; mask >>= 1, seq += 1) {
      if ((mask & 1U) != 0) batch.seq_id[i][n++] = static_cast<llama_seq_id>(seq);
    }
    batch.n_seq_id[i] = n;
    batch.logits[i] = static_cast<int8_t>(work->logits[i] != 0);
  }
  const auto started = std::chrono::steady_clock::now();
  work->status = llama_decode(context->ctx, batch);
  const auto decoded = std::chrono::steady_clock::now();
  if (work->status != 0) {
    work->error = work->status == 1 ? "llama_decode found no KV slot for the batch"
                                    : "llama_decode failed with status " + std::to_string(work->status);
    return;
  }
  const int32_t vocab = context->model->nVocab;
  std::atomic<bool> missing{false};
  parallelFor(work->nOut, context->threads, [&](int32_t j) {
    const float *row = llama_get_logits_ith(context->ctx, work->outIndex[j]);
    if (row == nullptr) {
      missing = true;
      return;
    }
    const int32_t fullRow = work->outFullRow[j];
    float *destination = fullRow >= 0 ? work->full + static_cast<size_t>(fullRow) * static_cast<size_t>(vocab) : nullptr;
    rowStatistics(row, vocab, work->outTarget[j], work->outLogProb + j, work->outArgmax + j, destination);
  });
  if (missing) work->error = "llama.cpp kept no logits for a requested position";
  if (std::getenv("POLYQUANT_NATIVE_TIMING") != nullptr) {
    const auto done = std::chrono::steady_clock::now();
    std::fprintf(stderr, "polyquant-llama: decode %d tokens %.1f ms, %d outputs %.1f ms\n", work->nTokens,
                 std::chrono::duration<double, std::milli>(decoded - started).count(), work->nOut,
                 std::chrono::duration<double, std::milli>(done - decoded).count());
  }
}

void decodeComplete(napi_env env, napi_status, void *data) {
  auto *work = static_cast<DecodeWork *>(data);
  work->context->busy = false;
  for (napi_ref ref : work->refs) napi_delete_reference(env, ref);
  if (work->error.empty()) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, work->deferred, undefined);
  } else {
    rejectWith(env, work->deferred, work->error, &work->status);
  }
  napi_delete_async_work(env, work->work);
  delete work;
}

napi_value Decode(napi_env env, napi_callback_info info) {
  napi_value argv[11];
  if (!getArgs(env, info, 11, argv)) return nullptr;
  Context *context = getContext(env, argv[0]);
  if (context == nullptr) return nullptr;
  if (context->busy) return throwError(env, "polyquant-llama: the context is already decoding");
  auto work = std::make_unique<DecodeWork>();
  work->context = context;
  size_t nTokens = 0, nPositions = 0, nMasks = 0, nLogits = 0, nIndex = 0, nTarget = 0, nLogProb = 0, nArgmax = 0,
         nFullRow = 0, nFull = 0;
  int32_t *tokens = nullptr, *positions = nullptr, *outIndex = nullptr, *outTarget = nullptr, *outArgmax = nullptr,
          *outFullRow = nullptr;
  uint32_t *masks = nullptr;
  uint8_t *logits = nullptr;
  double *outLogProb = nullptr;
  float *full = nullptr;
  if (!getTypedArray(env, argv[1], napi_int32_array, &tokens, &nTokens) ||
      !getTypedArray(env, argv[2], napi_int32_array, &positions, &nPositions) ||
      !getTypedArray(env, argv[3], napi_uint32_array, &masks, &nMasks) ||
      !getTypedArray(env, argv[4], napi_uint8_array, &logits, &nLogits) ||
      !getTypedArray(env, argv[5], napi_int32_array, &outIndex, &nIndex) ||
      !getTypedArray(env, argv[6], napi_int32_array, &outTarget, &nTarget) ||
      !getTypedArray(env, argv[7], napi_float64_array, &outLogProb, &nLogProb) ||
      !getTypedArray(env, argv[8], napi_int32_array, &outArgmax, &nArgmax) ||
      !getTypedArray(env, argv[9], napi_int32_array, &outFullRow, &nFullRow) ||
      !getTypedArray(env, argv[10], napi_float32_array, &full, &nFull, true)) {
    return throwError(env, "polyquant-llama: decode(context, tokens i32, positions i32, seqMasks u32, logits u8, "
                           "outIndex i32, outTarget i32, outLogProb f64, outArgmax i32, outFullRow i32, full f32|null)");
  }
  if (nTokens < 1 || nTokens > static_cast<size_t>(context->nBatch) || nPositions != nTokens || nMasks != nTokens ||
      nLogits != nTokens) {
    return throwError(env, "polyquant-llama: decode needs 1 to nBatch tokens with a position, sequence mask and logits flag each");
  }
  if (nTarget != nIndex || nLogProb != nIndex || nArgmax != nIndex || nFullRow != nIndex) {
    return throwError(env, "polyquant-llama: decode's output arrays must all have one entry per requested output");
  }
  const uint32_t allowed = context->nSeqMax >= 32 ? 0xffffffffU : ((1U << context->nSeqMax) - 1U);
  const int32_t vocab = context->model->nVocab;
  for (size_t i = 0; i < nTokens; i += 1) {
    if (tokens[i] < 0 || tokens[i] >= vocab) return throwError(env, "polyquant-llama: token id outside the vocabulary");
    if (masks[i] == 0 || (masks[i] & ~allowed) != 0) return throwError(env, "polyquant-llama: sequence mask outside nSeqMax");
    if (positions[i] < 0) return throwError(env, "polyquant-llama: negative position");
  }
  const size_t fullRows = nFull / static_cast<size_t>(vocab);
  for (size_t j = 0; j < nIndex; j += 1) {
    if (outIndex[j] < 0 || static_cast<size_t>(outIndex[j]) >= nTokens || logits[outIndex[j]] == 0) {
      return throwError(env, "polyquant-llama: an output index names a token without logits");
    }
    if (outTarget[j] >= vocab) return throwError(env, "polyquant-llama: target token outside the vocabulary");
    if (outFullRow[j] >= 0 && static_cast<size_t>(outFullRow[j]) >= fullRows) {
      return throwError(env, "polyquant-llama: full row outside the full array");
    }
  }
  work->tokens = tokens;
  work->positions = positions;
  work->seqMasks = masks;
  work->logits = logits;
  work->nTokens = static_cast<int32_t>(nTokens);
  work->outIndex = outIndex;
  work->outTarget = outTarget;
  work->outLogProb = outLogProb;
  work->outArgmax = outArgmax;
  work->outFullRow = outFullRow;
  work->full = full;
  work->nOut = static_cast<int32_t>(nIndex);
  for (int a = 1; a <= 10; a += 1) {
    napi_valuetype kind;
    NAPI_CALL(env, napi_typeof(env, argv[a], &kind));
    if (kind != napi_object) continue;
    napi_ref ref;
    NAPI_CALL(env, napi_create_reference(env, argv[a], 1, &ref));
    work->refs.push_back(ref);
  }
  napi_value promise = queueWork(env, "polyquant.decode", work.get(), decodeExecute, decodeComplete);
  if (promise == nullptr) return nullptr;
  context->busy = true;
  work.release();
  return promise;
}

// ---- KL divergence -----------------------------------------------------------------------------------

struct KlWork {
  napi_async_work work = nullptr;
  napi_deferred deferred = nullptr;
  std::vector<napi_ref> refs;
  const float *base = nullptr;
  const float *candidate = nullptr;
  double *out = nullptr;
  int32_t vocab = 0;
  int32_t rows = 0;
  int32_t threads = 1;
};

/**
 * KL(base ‖ candidate) per row of log-probabilities, Σ exp(b)(b − c) in double, clamped at 0 — the same
 * formula and summation order as klDivergenceRow in src/verify/stats.ts, off the JS thread.
 */
void klExecute(napi_env, void *data) {
  auto *work = static_cast<KlWork *>(data);
  parallelFor(work->rows, work->threads, [&](int32_t r) {
    const float *b = work->base + static_cast<size_t>(r) * static_cast<size_t>(work->vocab);
    const float *c = work->candidate + static_cast<size_t>(r) * static_cast<size_t>(work->vocab);
    double kld = 0;
    for (int32_t i = 0; i < work->vocab; i += 1) {
      const double lb = b[i];
      if (lb == -INFINITY) continue;
      kld += std::exp(lb) * (lb - static_cast<double>(c[i]));
    }
    work->out[r] = kld > 0 || std::isnan(kld) ? kld : 0;
  });
}

void klComplete(napi_env env, napi_status, void *data) {
  auto *work = static_cast<KlWork *>(data);
  for (napi_ref ref : work->refs) napi_delete_reference(env, ref);
  napi_value undefined;
  napi_get_undefined(env, &undefined);
  napi_resolve_deferred(env, work->deferred, undefined);
  napi_delete_async_work(env, work->work);
  delete work;
}

napi_value KlDivergence(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  if (!getArgs(env, info, 6, argv)) return nullptr;
  auto work = std::make_unique<KlWork>();
  size_t nBase = 0, nCandidate = 0, nOut = 0;
  float *base = nullptr, *candidate = nullptr;
  double *out = nullptr;
  int64_t vocab = 0, rows = 0, threads = 1;
  if (!getTypedArray(env, argv[0], napi_float32_array, &base, &nBase) ||
      !getTypedArray(env, argv[1], napi_float32_array, &candidate, &nCandidate) || !getInt(env, argv[2], &vocab) ||
      !getInt(env, argv[3], &rows) || !getTypedArray(env, argv[4], napi_float64_array, &out, &nOut) ||
      !getInt(env, argv[5], &threads) || vocab < 1 || rows < 0 || threads < 1 ||
      nBase < static_cast<size_t>(vocab * rows) || nCandidate < static_cast<size_t>(vocab * rows) ||
      nOut < static_cast<size_t>(rows)) {
    return throwError(env, "polyquant-llama: klDivergence(base f32, candidate f32, vocab, rows, out f64, threads)");
  }
  work->base = base;
  work->candidate = candidate;
  work->out = out;
  work->vocab = static_cast<int32_t>(vocab);
  work->rows = static_cast<int32_t>(rows);
  work->threads = static_cast<int32_t>(threads);
  for (int a : {0, 1, 4}) {
    napi_ref ref;
    NAPI_CALL(env, napi_create_reference(env, argv[a], 1, &ref));
    work->refs.push_back(ref);
  }
  napi_value promise = queueWork(env, "polyquant.klDivergence", work.get(), klExecute, klComplete);
  if (promise != nullptr) work.release();
  return promise;
}

// ---- row buffers -------------------------------------------------------------------------------------

void freeRows(napi_env env, void *data, void *hint) {
  const auto bytes = reinterpret_cast<size_t>(hint);
  munmap(data, bytes);
  int64_t adjusted = 0;
  napi_adjust_external_memory(env, -static_cast<int64_t>(bytes), &adjusted);
}

/**
 * allocateRows(floats) → Float32Array: zeroed memory for full log-probability rows, mapped with
 * transparent huge pages where the kernel allows (madvise). A window's rows are tens of MB written once:
 * in 4 KiB pages their first touch cost as much as the tiny model's whole decode.
 */
napi_value AllocateRows(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv)) return nullptr;
  int64_t floats = 0;
  if (!getInt(env, argv[0], &floats) || floats < 1 || floats > (int64_t{1} << 40)) {
    return throwError(env, "polyquant-llama: allocateRows(floats)");
  }
  const size_t bytes = static_cast<size_t>(floats) * sizeof(float);
  void *data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (data == MAP_FAILED) return throwError(env, "polyquant-llama: out of memory for " + std::to_string(bytes) + " bytes of rows");
#ifdef MADV_HUGEPAGE
  madvise(data, bytes, MADV_HUGEPAGE);
#endif
  napi_value buffer, array;
  if (napi_create_external_arraybuffer(env, data, bytes, freeRows, reinterpret_cast<void *>(bytes), &buffer) != napi_ok) {
    munmap(data, bytes);
    return throwError(env, "polyquant-llama: could not wrap the row buffer");
  }
  int64_t adjusted = 0;
  napi_adjust_external_memory(env, static_cast<int64_t>(bytes), &adjusted);
  NAPI_CALL(env, napi_create_typedarray(env, napi_float32_array, static_cast<size_t>(floats), buffer, 0, &array));
  return array;
}

/** The least severe llama.cpp log level still printed (to stderr) once quietLogs has been called (ggml.h's levels: 3 warn, 4 error). */
std::atomic<int> minimumLogLevel{GGML_LOG_LEVEL_ERROR};

void logToStderr(enum ggml_log_level level, const char *text, void *) {
  // A continuation line has the level of the message it continues.
  thread_local int last = GGML_LOG_LEVEL_INFO;
  if (level != GGML_LOG_LEVEL_CONT) last = level;
  if (last >= minimumLogLevel.load()) std::fputs(text, stderr);
}

/**
 * quietLogs(level): llama.cpp prints only messages at `level` (3 warn, 4 error) or above. Only for a
 * llama.cpp built for this addon: with node-llama-cpp's prebuilt, node-llama-cpp owns the log callback.
 */
napi_value QuietLogs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!getArgs(env, info, 1, argv)) return nullptr;
  int64_t level = GGML_LOG_LEVEL_ERROR;
  if (!getInt(env, argv[0], &level)) return throwError(env, "polyquant-llama: quietLogs(level)");
  minimumLogLevel = static_cast<int>(level);
  llama_log_set(logToStderr, nullptr);
  return nullptr;
}

/** llama.cpp's registered devices: [{ name, description, type: cpu | gpu | igpu | accel | meta }]. */
napi_value Devices(napi_env env, napi_callback_info) {
  napi_value devices;
  NAPI_CALL(env, napi_create_array(env, &devices));
  for (size_t i = 0; i < ggml_backend_dev_count(); i += 1) {
    ggml_backend_dev_t device = ggml_backend_dev_get(i);
    const char *type = "cpu";
    switch (ggml_backend_dev_type(device)) {
      case GGML_BACKEND_DEVICE_TYPE_GPU: type = "gpu"; break;
      case GGML_BACKEND_DEVICE_TYPE_IGPU: type = "igpu"; break;
      case GGML_BACKEND_DEVICE_TYPE_ACCEL: type = "accel"; break;
      case GGML_BACKEND_DEVICE_TYPE_CPU: type = "cpu"; break;
      default: type = "other"; break;
    }
    napi_value entry, name, description, kind;
    NAPI_CALL(env, napi_create_object(env, &entry));
    NAPI_CALL(env, napi_create_string_utf8(env, ggml_backend_dev_name(device), NAPI_AUTO_LENGTH, &name));
    NAPI_CALL(env, napi_create_string_utf8(env, ggml_backend_dev_description(device), NAPI_AUTO_LENGTH, &description));
    NAPI_CALL(env, napi_create_string_utf8(env, type, NAPI_AUTO_LENGTH, &kind));
    NAPI_CALL(env, napi_set_named_property(env, entry, "name", name));
    NAPI_CALL(env, napi_set_named_property(env, entry, "description", description));
    NAPI_CALL(env, napi_set_named_property(env, entry, "type", kind));
    NAPI_CALL(env, napi_set_element(env, devices, static_cast<uint32_t>(i), entry));
  }
  return devices;
}

napi_value Init(napi_env env, napi_value exports) {
  // Idempotent: where node-llama-cpp has loaded the library it has run it already; a llama.cpp built
  // from source for this addon (scripts/build-native.mjs --from-source) needs it here.
  llama_backend_init();
  const napi_property_descriptor properties[] = {
      {"devices", nullptr, Devices, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"quietLogs", nullptr, QuietLogs, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"allocateRows", nullptr, AllocateRows, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"loadModel", nullptr, LoadModel, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"freeModel", nullptr, FreeModel, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"modelInfo", nullptr, ModelInfo, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"tokenize", nullptr, Tokenize, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"createContext", nullptr, CreateContext, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"freeContext", nullptr, FreeContext, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"contextInfo", nullptr, ContextInfo, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"seqRemove", nullptr, SeqRemove, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"memoryClear", nullptr, MemoryClear, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"imatrixEntries", nullptr, ImatrixEntries, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"decode", nullptr, Decode, nullptr, nullptr, nullptr, napi_default, nullptr},
      {"klDivergence", nullptr, KlDivergence, nullptr, nullptr, nullptr, napi_default, nullptr},
  };
  if (napi_define_properties(env, exports, sizeof(properties) / sizeof(properties[0]), properties) != napi_ok) return nullptr;
  return exports;
}

}  // namespace

NAPI_MODULE(polyquant_llama, Init)
