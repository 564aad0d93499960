/*
 * libgpurnn: train vanilla (Elman, tanh) recurrent networks with backpropagation
 * through time, on an OpenMP + CBLAS CPU backend or a CUDA backend chosen at run time.
 *
 * The model (V vocabulary, H hidden units, B sequences, T time steps):
 *
 *     h_t = tanh(Wxh[:, x_t] + Whh h_{t-1} + bh)      x_t is a token id (one-hot input)
 *     y_t = Why h_t + by
 *     p_t = softmax(y_t)
 *     L   = sum_{t,b} -log p_t[target_t]              (GPURNN_LOSS_SUM)
 *           or that sum / (T*B)                       (GPURNN_LOSS_MEAN)
 *
 * Conventions that hold for every function below:
 *  - Every fallible call returns a gpurnn_status; GPURNN_OK is 0.
 *  - On failure the call changes nothing observable: parameters, gradients, carried
 *    state, optimizer state and files are as they were before the call, and
 *    gpurnn_last_error() names the bad value.
 *  - No function exits, aborts, or prints.
 *  - Arrays passed in are owned by the caller and only read (or written, for outputs)
 *    during the call; the library keeps no pointer to them.
 *  - All host buffers exchanged with the library are float64, whatever the model's dtype:
 *    values are converted on the way in and out.
 *  - Thread safety:
 *
 *      calls                                   from several threads at the same time
 *      --------------------------------------  ------------------------------------------
 *      functions that take no model            safe (config_init, backend_available,
 *                                              backend_check, backend_module,
 *                                              status_string, version,
 *                                              model_load, model_create)
 *      any calls on different models           safe, and each gives the same results, bit
 *                                              for bit, as when the calls run one after
 *                                              another (saves to one path: the file ends
 *                                              up one complete checkpoint)
 *      calls on the same model                 not safe, read-only ones (params_get,
 *                                              model_save, ...) included: serialise them
 *      gpurnn_last_error()                     per thread: it returns this thread's
 *                                              message, which other threads' calls never
 *                                              change
 *
 *    Checked by tests/test_threads.cc and tests/test_init_layout.cc's thread tests, also
 *    under ThreadSanitizer (.ci/tsan.sh).
 */
#ifndef GPURNN_H
#define GPURNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(GPURNN_BUILDING_SHARED)
#define GPURNN_API __declspec(dllexport)
#elif defined(__GNUC__)
#define GPURNN_API __attribute__((visibility("default")))
#else
#define GPURNN_API
#endif

#define GPURNN_VERSION_MAJOR 0
#define GPURNN_VERSION_MINOR 1
#define GPURNN_VERSION_PATCH 0

typedef enum {
    GPURNN_OK = 0,
    GPURNN_ERR_INVALID_ARGUMENT,    /* a bad value from the caller; the message names it */
    GPURNN_ERR_INVALID_STATE,       /* e.g. backward with no forward before it */
    GPURNN_ERR_OUT_OF_MEMORY,
    GPURNN_ERR_BACKEND_UNAVAILABLE, /* not built in, no device, driver too old */
    GPURNN_ERR_CUDA,                /* a CUDA or cuBLAS call failed */
    GPURNN_ERR_IO,                  /* a file could not be read or written */
    GPURNN_ERR_FORMAT,              /* a file is not a valid checkpoint */
    GPURNN_ERR_NUMERIC              /* a loss, gradient or update is not finite */
} gpurnn_status;

typedef enum { GPURNN_BACKEND_AUTO, GPURNN_BACKEND_CPU, GPURNN_BACKEND_CUDA } gpurnn_backend;
typedef enum { GPURNN_F32, GPURNN_F64 } gpurnn_dtype;
typedef enum { GPURNN_LOSS_SUM, GPURNN_LOSS_MEAN } gpurnn_loss_reduction;

/* The five tensors, in the order they sit in the flat parameter buffer (row-major):
 *   GPURNN_WXH  Wxh  (H, V)  offset 0
 *   GPURNN_WHH  Whh  (H, H)  offset H*V
 *   GPURNN_WHY  Why  (V, H)  offset H*V + H*H
 *   GPURNN_BH   bh   (H)     offset H*V + H*H + V*H
 *   GPURNN_BY   by   (V)     offset 2*H*V + H*H + H
 * Gradients and optimizer state use the same layout. */
typedef enum { GPURNN_WXH, GPURNN_WHH, GPURNN_WHY, GPURNN_BH, GPURNN_BY, GPURNN_NUM_TENSORS } gpurnn_tensor;

/* The recurrent cell of every layer. Layer l at step t has input x (the one-hot token for
 * l = 0, h of layer l-1 at step t above it) and its own h_prev (and c_prev); its weights
 * hold G gates of H rows each, in PyTorch's (and cuDNN's) order:
 *   GPURNN_CELL_TANH  G = 1    h = tanh(W_ih x + W_hh h_prev + b)
 *   GPURNN_CELL_RELU  G = 1    h = max(0, W_ih x + W_hh h_prev + b)
 *   GPURNN_CELL_GRU   G = 3    r = sigmoid(W_ir x + b_ir + W_hr h_prev + b_hr)
 *                   (r, z, n)  z = sigmoid(W_iz x + b_iz + W_hz h_prev + b_hz)
 *                              n = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn))
 *                              h = (1 - z) * n + z * h_prev
 *   GPURNN_CELL_LSTM  G = 4    i, f, o = sigmoid(W_i* x + b_i* + W_h* h_prev + b_h*)
 *                (i, f, g, o)  g = tanh(W_ig x + b_ig + W_hg h_prev + b_hg)
 *                              c = f * c_prev + i * g ;  h = o * tanh(c)
 * The output layer reads h of the top layer: y_t = Why h^{L-1}_t + by.
 * Parameter layout (row-major; gate k occupies rows [k*H, (k+1)*H) of its tensor):
 *   for l = 0 .. L-1:  W_ih_l (G*H, V for l = 0, else H), W_hh_l (G*H, H)
 *   Why (V, H)
 *   for l = 0 .. L-1:  TANH/RELU: b_l (H)  (PyTorch's bias_ih_l + bias_hh_l)
 *                      GRU/LSTM:  b_ih_l (G*H), b_hh_l (G*H)
 *   by (V)
 * With one TANH or RELU layer these are Wxh, Whh, Why, bh, by above (and the five
 * gpurnn_tensor ids keep their meaning); gpurnn_tensor_count / gpurnn_tensor_info describe
 * the tensors of any model. */
typedef enum { GPURNN_CELL_TANH, GPURNN_CELL_RELU, GPURNN_CELL_GRU, GPURNN_CELL_LSTM } gpurnn_cell;

/* The most layers a model may have. */
#define GPURNN_MAX_LAYERS 1024

/* An opaque model: its parameters, gradients, optimizer state, carried hidden state and
 * the activations of its last forward pass, on one backend. */
typedef struct gpurnn_model gpurnn_model;

typedef struct gpurnn_config {
    int vocab_size;                 /* V >= 1 */
    int hidden_size;                /* H >= 1 */
    int batch_size;                 /* B >= 1 */
    int max_seq_len;                /* largest T accepted by gpurnn_forward, in
                                       [1, GPURNN_MAX_SEQ_LEN] */
    gpurnn_dtype dtype;             /* storage and compute precision */
    gpurnn_backend backend;         /* AUTO: CUDA when usable (and able to hold this
                                       configuration), else CPU */
    gpurnn_loss_reduction reduction;
    unsigned long long seed;        /* initial weights: N(0,1) * init_scale, biases 0 */
    double init_scale;              /* 0 means the default, 0.01 */
    /* Checkpointed BPTT. Backward needs every hidden state of the forward pass: (T+1)*B*H
     * values. With bptt_checkpoint_every = k >= 1 the forward pass keeps only every k-th
     * state, and backward recomputes the others from them, a stretch at a time, walking
     * backwards: activation memory ~ (T/k + k + C)*B*H values (C: the output layer's
     * chunk of time steps, see gpurnn_model_memory) for about one more forward pass of
     * the recurrence. The gradients are bit-identical to those of the full history.
     *   0                    automatic: the full history when its (max_seq_len+1)*B*H
     *                        values fit activation_budget_bytes, otherwise k about
     *                        sqrt(max_seq_len) (rounded up to a multiple of C)
     *   GPURNN_BPTT_KEEP_ALL the full history, whatever its size
     * Neither field is saved in checkpoint files: a loaded model chooses again. */
    int bptt_checkpoint_every;
    unsigned long long activation_budget_bytes;  /* 0 means the default, 1 GiB */
    gpurnn_cell cell;               /* every layer's cell (see gpurnn_cell): default TANH */
    int num_layers;                 /* L, in [0, GPURNN_MAX_LAYERS]: 0 means 1 */
} gpurnn_config;

#define GPURNN_BPTT_KEEP_ALL (-1)
/* The largest max_seq_len (2^24). Checkpoint files cannot hold more (a file must not make
 * its loader allocate per-step buffers that no bytes of it back: docs/checkpoint-format.md),
 * so gpurnn_model_create refuses more, and every model it creates can be saved. */
#define GPURNN_MAX_SEQ_LEN (1 << 24)
#define GPURNN_DEFAULT_ACTIVATION_BUDGET (1ULL << 30)

/* Fills every field with its default: V = H = B = 0 (the caller must set them),
 * max_seq_len 0 (must be set), F32, AUTO, LOSS_SUM, seed 0, init_scale 0.01,
 * bptt_checkpoint_every 0 (automatic), activation_budget_bytes 1 GiB, cell TANH,
 * num_layers 1 (stored as 0 in a zeroed struct; gpurnn_model_config reports 1).
 * A zero-initialised struct has the same meaning. */
GPURNN_API void gpurnn_config_init(gpurnn_config *cfg);

/* Creates a model: parameters drawn from cfg->seed (the same values on every backend and
 * dtype, up to the dtype's rounding), gradients, optimizer state and carried state zero.
 * All memory the model will use during training is allocated here.
 * *out is set only on success; destroy it with gpurnn_model_destroy.
 * Errors: INVALID_ARGUMENT (NULL pointer, a size < 1, max_seq_len above
 * GPURNN_MAX_SEQ_LEN, an unknown enum value, a negative
 * or non-finite init_scale, one so large that weights could overflow the dtype (above
 * FLT_MAX / 9 for float32, DBL_MAX / 9 for float64), bptt_checkpoint_every < -1, or
 * buffer sizes that overflow size_t), BACKEND_UNAVAILABLE
 * (an explicit backend that cannot be used here; the message says why), OUT_OF_MEMORY
 * (the message gives the bytes asked for), CUDA. */
GPURNN_API gpurnn_status gpurnn_model_create(const gpurnn_config *cfg, gpurnn_model **out);

/* Frees everything the model owns. NULL is allowed. */
GPURNN_API void gpurnn_model_destroy(gpurnn_model *m);

/* The backend the model runs on (CPU or CUDA; never AUTO). Returns AUTO for NULL. */
GPURNN_API gpurnn_backend gpurnn_model_backend(const gpurnn_model *m);

/* The model's configuration as resolved at creation (defaults filled in, backend
 * resolved, bptt_checkpoint_every resolved to GPURNN_BPTT_KEEP_ALL or k >= 1).
 * Errors: INVALID_ARGUMENT for NULL. */
GPURNN_API gpurnn_status gpurnn_model_config(const gpurnn_model *m, gpurnn_config *out);

/* Bytes a model holds, by what they are for and where they live (host memory, or the
 * device's for a CUDA model), so that users can plan memory. Everything is allocated at
 * creation, so the figures do not change while the model trains. */
typedef enum {
    GPURNN_MEMORY_PARAMETERS,
    GPURNN_MEMORY_GRADIENTS,
    GPURNN_MEMORY_OPTIMIZER,     /* both optimizer slots */
    GPURNN_MEMORY_ACTIVATIONS,   /* what backward needs from forward: hidden states (or BPTT
                                    checkpoints and the recomputation window), the tokens and
                                    per-row log-sum-exps, the output layer's chunk buffers */
    GPURNN_MEMORY_WORKSPACE,     /* everything else: carried state, staging, cuBLAS workspace */
    GPURNN_MEMORY_KINDS
} gpurnn_memory_kind;

typedef struct gpurnn_memory_report {
    size_t host[GPURNN_MEMORY_KINDS];
    size_t device[GPURNN_MEMORY_KINDS];  /* all 0 for a CPU model */
    size_t host_total, device_total;
    int bptt_checkpoint_every;           /* as resolved: GPURNN_BPTT_KEEP_ALL or k >= 1 */
    int chunk_steps;                     /* C: time steps per output-layer chunk */
} gpurnn_memory_report;

/* Fills *out. Errors: INVALID_ARGUMENT (NULL). */
GPURNN_API gpurnn_status gpurnn_model_memory(const gpurnn_model *m, gpurnn_memory_report *out);

/* 1 if models can be created on backend b in this process, 0 otherwise.
 * AUTO and CPU are always available. */
GPURNN_API int gpurnn_backend_available(gpurnn_backend b);

/* GPURNN_OK if backend b is usable here; otherwise BACKEND_UNAVAILABLE (or
 * INVALID_ARGUMENT for an unknown value) with gpurnn_last_error() saying why and naming
 * the module file it tried, e.g. "CUDA backend: cannot load module
 * /usr/local/lib/libgpurnn_cuda.so: libcublas.so.13: cannot open shared object file: No
 * such file or directory", "... module libgpurnn_cuda.so not found (looked for ...)",
 * "... has backend interface version 2; this libgpurnn (0.1.0) needs version 1", or the
 * driver's or device's absence. Use it to learn why AUTO resolved to the CPU.
 *
 * The CUDA backend is a module, libgpurnn_cuda.so, that libgpurnn loads with dlopen the
 * first time CUDA is asked for or probed (this call, gpurnn_backend_available, or a model
 * created with AUTO or CUDA): from the path in the environment variable
 * GPURNN_CUDA_MODULE when that is set, otherwise from beside libgpurnn.so, otherwise from
 * the directory libgpurnn was installed to. libgpurnn itself links no CUDA library, so a
 * program linked with it starts on any machine. The outcome of loading is fixed for the
 * rest of the process; whether a device is usable is checked on each call. */
GPURNN_API gpurnn_status gpurnn_backend_check(gpurnn_backend b);

/* The path of the module file that libgpurnn loaded, or tried to load, for backend b
 * (loading it first if nothing has asked for b yet); NULL for the CPU and AUTO, or when
 * no module file was found. The string lives as long as the process. */
GPURNN_API const char *gpurnn_backend_module(gpurnn_backend b);

/* Number of parameters: 2HV + H^2 + H + V for one tanh/ReLU layer; in general the sum of
 * the sizes of the tensors in gpurnn_cell's layout. 0 for NULL. */
GPURNN_API size_t gpurnn_param_count(const gpurnn_model *m);
/* Offset of tensor t in the flat buffer and its number of elements (see the table
 * above), for a model of one TANH or RELU layer. 0 for NULL, an unknown tensor, or any
 * other model (use gpurnn_tensor_info). */
GPURNN_API size_t gpurnn_tensor_offset(const gpurnn_model *m, gpurnn_tensor t);
GPURNN_API size_t gpurnn_tensor_size(const gpurnn_model *m, gpurnn_tensor t);

/* One tensor of a model's flat parameter buffer. */
typedef struct gpurnn_tensor_info {
    char name[24];      /* "Wxh", "Whh", "Why", "bh", "by" for one tanh/ReLU layer; otherwise
                           "W_ih_l0", "W_hh_l0", ..., "Why", "b_l0" (tanh/ReLU) or "b_ih_l0",
                           "b_hh_l0" (GRU/LSTM), ..., "by" */
    int layer;          /* l for a recurrent layer's tensor, -1 for Why and by */
    int ndim;           /* 2 for a matrix, 1 for a vector */
    size_t shape[2];    /* (rows, cols), or (size, 1) for a vector */
    size_t offset;      /* first element in the flat buffer */
    size_t size;        /* elements: shape[0] * shape[1] */
} gpurnn_tensor_info;

/* Number of tensors of m's layout, in buffer order (the order of gpurnn_cell's layout):
 * 2L + 1 + L + 1 for tanh/ReLU (5 for one layer), 2L + 1 + 2L + 1 for GRU/LSTM. 0 for NULL. */
GPURNN_API size_t gpurnn_tensor_count(const gpurnn_model *m);
/* Describes tensor index (0 .. gpurnn_tensor_count(m) - 1) into *out.
 * Errors: INVALID_ARGUMENT (NULL, index out of range: the message gives the count). */
GPURNN_API gpurnn_status gpurnn_tensor_info_get(const gpurnn_model *m, size_t index, gpurnn_tensor_info *out);

/* Number of values of the carried state: L*B*H, and twice that for LSTM (h, then c).
 * 0 for NULL. */
GPURNN_API size_t gpurnn_state_count(const gpurnn_model *m);

/* Host float64 views of the flat buffers, whatever the model's dtype.
 * n must equal gpurnn_param_count(m); dst/src hold n values.
 * params_set rejects values that are not finite, or would not be in the model's dtype
 * (e.g. 1e300 for float32): INVALID_ARGUMENT naming the tensor and entry;
 * it invalidates the last forward pass (backward then returns INVALID_STATE).
 * Errors: INVALID_ARGUMENT (NULL, wrong n, non-finite value), CUDA. */
GPURNN_API gpurnn_status gpurnn_params_get(const gpurnn_model *m, double *dst, size_t n);
GPURNN_API gpurnn_status gpurnn_params_set(gpurnn_model *m, const double *src, size_t n);
GPURNN_API gpurnn_status gpurnn_grads_get(const gpurnn_model *m, double *dst, size_t n);

/* Carried state: gpurnn_state_count(m) values, PyTorch's (h_n, c_n) flattened one after
 * the other: h of every layer, (L, B, H), sequence b's vector of layer l at
 * [(l*B + b)*H, (l*B + b + 1)*H); then for LSTM c of every layer, (L, B, H), at
 * L*B*H + the same index. For the vanilla model that is B*H values, sequence b's at
 * [b*H, (b+1)*H). gpurnn_forward starts from it and leaves the state after step T-1
 * there, as min-char-rnn's hprev (no gradient crosses calls). n must equal
 * gpurnn_state_count(m); state_set rejects values that are not finite in the model's dtype.
 * Errors: INVALID_ARGUMENT, CUDA. */
GPURNN_API gpurnn_status gpurnn_state_get(const gpurnn_model *m, double *dst, size_t n);
GPURNN_API gpurnn_status gpurnn_state_set(gpurnn_model *m, const double *src, size_t n);
GPURNN_API gpurnn_status gpurnn_state_reset(gpurnn_model *m);   /* sets it to zero */

/* One forward pass over T steps of B sequences.
 * inputs, targets: host int32, time-major (T, B): the token of sequence b at step t is
 * inputs[t*B + b]; every id must lie in [0, V). T in 1..max_seq_len.
 * Writes the loss (sum or mean, per the config) to *loss, keeps the hidden states for
 * gpurnn_backward, and leaves h_{T-1} in the carried state.
 * Errors: INVALID_ARGUMENT (NULL, T out of range, a token out of range: the message
 * names it, its t and b), NUMERIC (the loss is not finite; the carried state is then
 * unchanged and there is no forward pass to backpropagate), CUDA. */
GPURNN_API gpurnn_status gpurnn_forward(gpurnn_model *m, const int32_t *inputs, const int32_t *targets,
                                        int T, double *loss);

/* Adds d(loss of the last forward)/d(params) into the gradients (which accumulate until
 * gpurnn_zero_grad). May be called more than once per forward (it adds again).
 * Errors: INVALID_ARGUMENT (NULL), INVALID_STATE (no forward since creation, loading,
 * gradcheck, or a change of the parameters by params_set or step), CUDA. */
GPURNN_API gpurnn_status gpurnn_backward(gpurnn_model *m);

/* Sets every gradient to zero. Errors: INVALID_ARGUMENT (NULL), CUDA. */
GPURNN_API gpurnn_status gpurnn_zero_grad(gpurnn_model *m);

/* Clamps each gradient entry to [-limit, limit]; limit must be finite and >= 0.
 * Errors: INVALID_ARGUMENT, CUDA. */
GPURNN_API gpurnn_status gpurnn_clip_grad_value(gpurnn_model *m, double limit);

/* Global L2 norm over every gradient entry; when it exceeds max_norm the gradients are
 * scaled by max_norm / (norm + 1e-6), as torch.nn.utils.clip_grad_norm_ does.
 * *norm_before (may be NULL) receives the norm before clipping.
 * max_norm must be finite and >= 0.
 * Errors: INVALID_ARGUMENT, NUMERIC (the norm is not finite; nothing is scaled), CUDA. */
GPURNN_API gpurnn_status gpurnn_clip_grad_norm(gpurnn_model *m, double max_norm, double *norm_before);

typedef enum { GPURNN_SGD, GPURNN_ADAGRAD, GPURNN_ADAM } gpurnn_optimizer_kind;
typedef struct gpurnn_optimizer {        /* a zero beta1, beta2 or eps means its default */
    gpurnn_optimizer_kind kind;
    double learning_rate;           /* >= 0 */
    double momentum;                /* SGD: v = momentum*v + g; p -= lr*v. In [0, 1) */
    double beta1, beta2;            /* Adam (Kingma & Ba, bias-corrected): 0.9, 0.999 */
    double eps;                     /* 1e-8. Adagrad: mem += g*g; p -= lr*g/sqrt(mem + eps).
                                       Adam: p -= lr*m_hat/(sqrt(v_hat) + eps) */
} gpurnn_optimizer;

/* One optimizer update of every parameter from the current gradients (which it leaves
 * as they are). The optimizer state (SGD velocity, Adagrad memory, Adam moments and
 * step count) belongs to the kind of the first step after creation or
 * gpurnn_optimizer_reset; a step of another kind is refused.
 * The update is all or nothing: if a gradient or a new value would not be finite, no
 * parameter or state changes.
 * Errors: INVALID_ARGUMENT (NULL, unknown kind, negative or non-finite learning rate,
 * momentum outside [0, 1), beta outside [0, 1), negative eps, a kind other than the
 * state's), NUMERIC (names the tensor and entry), CUDA. */
GPURNN_API gpurnn_status gpurnn_step(gpurnn_model *m, const gpurnn_optimizer *opt);

/* Clears the optimizer state (and Adam's step count) so that a new kind may be used.
 * Errors: INVALID_ARGUMENT (NULL), CUDA. */
GPURNN_API gpurnn_status gpurnn_optimizer_reset(gpurnn_model *m);

typedef struct gpurnn_gradcheck_result {
    double max_rel_error[GPURNN_NUM_TENSORS];  /* |a-n| / max(|a|,|n|), 0 when both are 0 */
    int checked[GPURNN_NUM_TENSORS];           /* entries compared per tensor */
} gpurnn_gradcheck_result;

/* Compares backpropagated gradients with central differences (L(w+eps) - L(w-eps)) /
 * (w+ - w-), where w+ and w- are the perturbed values as stored in the model's dtype.
 * Both start from the current carried state. For each tensor, min(samples_per_tensor,
 * size) entries are compared: every entry when the tensor has at most that many,
 * otherwise entries drawn (with replacement) from seed.
 * Leaves parameters, gradients and carried state as they were; the last forward pass is
 * used up (backward afterwards returns INVALID_STATE).
 * Models with more tensors than five (stacked layers, GRU, LSTM) are checked by
 * gpurnn_gradcheck_tensors below.
 * Errors: INVALID_ARGUMENT (NULL, T or a token out of range, eps not finite and > 0,
 * samples_per_tensor < 1, a model that is not one tanh/ReLU layer), NUMERIC, CUDA. */
GPURNN_API gpurnn_status gpurnn_gradcheck(gpurnn_model *m, const int32_t *inputs, const int32_t *targets,
                                          int T, double eps, int samples_per_tensor,
                                          unsigned long long seed, gpurnn_gradcheck_result *out);

/* The gradient check of any model, tensor by tensor (gpurnn_gradcheck covers the five
 * tensors of a one-layer tanh/ReLU model only).
 *
 * What passes. A central difference carries the round-off of the two losses it
 * subtracts, about u*|L| each (u the unit round-off of the model's dtype: 2^-53 for
 * float64, 2^-24 for float32), divided by the step: a correct gradient of -9.3e-7 can
 * show a relative error of 5e-5 at eps = 1e-5 in float64. So each entry gets an
 * absolute floor
 *     atol = GPURNN_GRADCHECK_ROUNDOFF * u * max(|L(w+)|, |L(w-)|, 1) / (w+ - w-)
 * and passes when |a - n| <= atol or |a - n| <= GPURNN_GRADCHECK_RTOL * max(|a|, |n|)
 * (a the backpropagated gradient, n the central difference), as PyTorch's gradcheck
 * does with atol and rtol. Entries whose gradient is above atol / RTOL must so have a
 * relative error below RTOL (1e-5, the bar of the seed); those below it, an absolute
 * error below atol. */
#define GPURNN_GRADCHECK_RTOL 1e-5
#define GPURNN_GRADCHECK_ROUNDOFF 16.0

typedef struct gpurnn_gradcheck_tensor {
    int checked;              /* entries compared */
    int failed;               /* entries that do not pass */
    double max_rel_error;     /* largest |a-n| / max(|a|,|n|) among entries with
                                 max(|a|,|n|) >= atol / RTOL; 0 when there is none */
    double max_abs_error;     /* largest |a - n| among all entries compared */
    double max_atol;          /* largest floor atol among the entries compared */
    size_t worst_index;       /* flat index of the entry furthest outside its bar (the
                                 largest |a-n| / max(atol, RTOL*max(|a|,|n|))) */
    double worst_analytic, worst_numeric;  /* a and n at worst_index */
} gpurnn_gradcheck_tensor;

/* Compares backpropagated gradients with central differences for every tensor of m:
 * out[k] (out_count = gpurnn_tensor_count(m)) reports tensor k of gpurnn_tensor_info.
 * Entries are chosen, perturbed and restored as by gpurnn_gradcheck; a NaN in a result
 * counts as a failure and stays visible in max_abs_error. Returns GPURNN_OK when the
 * check ran, whatever it found: the caller reads failed.
 * Errors: as gpurnn_gradcheck, and INVALID_ARGUMENT for out_count other than the tensor
 * count. */
GPURNN_API gpurnn_status gpurnn_gradcheck_tensors(gpurnn_model *m, const int32_t *inputs, const int32_t *targets,
                                                  int T, double eps, int samples_per_tensor,
                                                  unsigned long long seed, gpurnn_gradcheck_tensor *out,
                                                  size_t out_count);

/* Feeds first_token, then each drawn token, starting from sequence 0's carried state;
 * writes the n tokens drawn to out[0..n-1]; p ∝ exp(y/temperature), temperature 0 =
 * argmax (the lowest id among ties). The same seed gives the same tokens.
 * Leaves the training state (carried state, activations, gradients) alone.
 * To continue a prompt, prime the state with gpurnn_infer(GPURNN_INFER_NONE) over the
 * prompt without its last token, then pass that last token as first_token (see "Using a
 * trained model" below); gpurnn_sample_batch does the same for every sequence.
 * Errors: INVALID_ARGUMENT (NULL, first_token outside [0, V), n < 1, temperature
 * negative or not finite), NUMERIC, CUDA. */
GPURNN_API gpurnn_status gpurnn_sample(gpurnn_model *m, int32_t first_token, int n, double temperature,
                                       unsigned long long seed, int32_t *out);

/* ---- Using a trained model: inference, scoring, sampling from a prompt ------------------
 *
 * These calls run the model on tokens without targets. They never touch the gradients or
 * the activations of the last gpurnn_forward (gpurnn_backward afterwards still
 * backpropagates that forward pass), and they allocate nothing: their buffers are taken at
 * creation (reported under GPURNN_MEMORY_WORKSPACE by gpurnn_model_memory).
 *
 * Priming with a prompt, then sampling (sequence 0):
 *     gpurnn_state_reset(m);
 *     gpurnn_infer(m, prompt, len - 1, GPURNN_INFER_NONE, GPURNN_PROBS, NULL, 0);  (B = 1)
 *     gpurnn_sample(m, prompt[len - 1], n, temperature, seed, out);
 * gpurnn_sample feeds its first_token itself, so the prompt's last token is left out of the
 * priming. With B > 1, prime every sequence with its own prompt (time-major, as inputs of
 * gpurnn_forward) and draw for all of them with gpurnn_sample_batch. */

/* What gpurnn_infer writes to out. */
typedef enum {
    GPURNN_INFER_NONE,      /* nothing: the call only advances the carried state (priming) */
    GPURNN_INFER_LAST,      /* the distribution after the last step only: (B, V) */
    GPURNN_INFER_EACH_STEP  /* the distribution after every step: (T, B, V) */
} gpurnn_infer_output;

/* How gpurnn_infer writes a distribution. */
typedef enum {
    GPURNN_PROBS,           /* p = softmax(y) */
    GPURNN_LOG_PROBS        /* log p = y - max(y) - log(sum exp(y - max(y))), never -inf
                               through underflow of p */
} gpurnn_prob_kind;

/* Advances the carried state over T steps of inputs, as gpurnn_forward does, but without
 * targets, loss or kept activations: the carried state ends at h_{T-1}, bit-identical to
 * what gpurnn_forward over the same inputs from the same state leaves on the same backend,
 * dtype and number of threads.
 * inputs: host int32, time-major (T, B): token of sequence b at step t is inputs[t*B + b],
 * every id in [0, V); T in 1..max_seq_len.
 * out: caller's float64 buffer of out_count values, written according to what:
 *   GPURNN_INFER_NONE       out may be NULL; out_count must be 0
 *   GPURNN_INFER_LAST       out_count = B*V: sequence b's distribution p_{T-1} at [b*V, (b+1)*V)
 *   GPURNN_INFER_EACH_STEP  out_count = T*B*V: p_t of sequence b at [(t*B + b)*V, (t*B + b + 1)*V)
 * p_t is the distribution of the token after x_t (softmax(Why h_t + by)), computed in
 * float64 from the model's logits whatever its dtype; kind selects probabilities or
 * log-probabilities. The library keeps no pointer to inputs or out.
 * Errors: INVALID_ARGUMENT (NULL model or inputs, NULL out with a nonzero out_count, T out
 * of range, a token out of range: the message names it, its t and b; an unknown what or
 * kind; out_count other than the count required: the message gives both), NUMERIC (a
 * logit is not finite: the parameters are too large; the carried state is then unchanged
 * and out's contents are unspecified), CUDA. On failure nothing in the model changes. */
GPURNN_API gpurnn_status gpurnn_infer(gpurnn_model *m, const int32_t *inputs, int T, gpurnn_infer_output what,
                                      gpurnn_prob_kind kind, double *out, size_t out_count);

/* The total log-likelihood of a text, in nats: sum over t < T and b < B of
 * log p_t[targets[t*B + b]] given inputs (both host int32, time-major (T, B), ids in
 * [0, V); T in 1..max_seq_len), from the carried state, which it advances to h_{T-1} as
 * gpurnn_infer does. It equals minus the loss gpurnn_forward would return with
 * GPURNN_LOSS_SUM (to rounding: in float64 up to the order of the sums; float32 models
 * take the score's exponentials in float64) but keeps no activations and leaves the
 * gradients and the last forward pass alone; scoring a text in pieces, one call after
 * another, gives the same total as one call, up to the order of the sums (the state
 * carries the context). Bits per
 * token: -*log_likelihood / (T*B) / ln 2.
 * Errors: INVALID_ARGUMENT (NULL, T or a token out of range, as gpurnn_forward), NUMERIC
 * (not finite; the carried state is unchanged), CUDA. */
GPURNN_API gpurnn_status gpurnn_score(gpurnn_model *m, const int32_t *inputs, const int32_t *targets, int T,
                                      double *log_likelihood);

/* gpurnn_sample for every sequence of the batch, each from its own carried state: sequence
 * b is fed first_tokens[b] (B values in [0, V)), then each token drawn for it; out (n, B),
 * time-major, receives draw k of sequence b at out[k*B + b]. Draw k of sequence b uses
 * its own random number of seed, so sequence 0 draws exactly the tokens gpurnn_sample
 * draws from sequence 0 with the same arguments, and no sequence's draws depend on B or
 * on the other sequences. Leaves the training state (carried state, activations,
 * gradients) alone. On CUDA the sequences are sampled one after another, each exactly
 * as gpurnn_sample samples (that is what keeps sequence 0's tokens), so a call costs
 * about B calls of gpurnn_sample.
 * Errors: INVALID_ARGUMENT (NULL, a first token outside [0, V): the message names b,
 * n < 1, temperature negative or not finite), NUMERIC, CUDA. */
GPURNN_API gpurnn_status gpurnn_sample_batch(gpurnn_model *m, const int32_t *first_tokens, int n,
                                             double temperature, unsigned long long seed, int32_t *out);

/* ---- checkpoints ---------------------------------------------------------------------
 *
 * A checkpoint (format: docs/checkpoint-format.md, version 3) holds the configuration
 * (cell and number of layers included), parameters, optimizer state and carried state of
 * a model, and optionally the caller's
 * own bytes (the "user data": a vocabulary, a tokenizer, training metadata), with one
 * CRC-64 over every byte. Gradients are not saved. The library never interprets the user
 * data; it stores it, checksums it and gives it back byte for byte.
 *
 * Files and memory buffers hold the same bytes: gpurnn_model_save_to_memory writes exactly
 * what gpurnn_model_save_with_user_data writes to a file, and either loader reads either.
 * Files written in format version 1 (before user data existed) still load, with no user
 * data, and so do those of version 2 (before cells and layers: one tanh layer).
 *
 * Ownership: the library keeps no pointer to any buffer passed in. A loaded user blob is
 * allocated by the library and belongs to the caller, who releases it with
 * gpurnn_user_data_free.
 *
 * Limits: every limit a saved model must meet is checked by gpurnn_model_create
 * (max_seq_len <= GPURNN_MAX_SEQ_LEN; V, H and B are ints), so every model that exists can
 * be saved. Save refuses only user data above GPURNN_USER_DATA_MAX, values that are not
 * finite (which the loader would reject), or what the system refuses (I/O, memory). */

/* The largest user blob a checkpoint holds: 64 MiB. */
#define GPURNN_USER_DATA_MAX ((size_t)64 << 20)

/* Writes a checkpoint with no user data to path; the same as
 * gpurnn_model_save_with_user_data(m, NULL, 0, path). */
GPURNN_API gpurnn_status gpurnn_model_save(const gpurnn_model *m, const char *path);

/* Writes a checkpoint holding user_data[0 .. user_data_size) to path. The file is written
 * beside path as "<path>.tmp-XXXXXX", flushed to disk and renamed over path, so a crash
 * leaves either the old or the new file (temporary files left by killed saves of the same
 * path are removed by the next save). A symbolic link at path is replaced, not followed.
 * user_data may be NULL only when user_data_size is 0.
 * Errors: INVALID_ARGUMENT (NULL, empty path, user_data_size above GPURNN_USER_DATA_MAX),
 * IO (names the path and the system's reason; an existing file at path is left intact),
 * NUMERIC (the model holds a value the loader would reject; nothing is written), CUDA. */
GPURNN_API gpurnn_status gpurnn_model_save_with_user_data(const gpurnn_model *m, const void *user_data,
                                                          size_t user_data_size, const char *path);

/* The size in bytes of m's checkpoint with user_data_size bytes of user data, written to
 * *size: the buffer that gpurnn_model_save_to_memory needs.
 * Errors: INVALID_ARGUMENT (NULL, user_data_size above GPURNN_USER_DATA_MAX, a size that
 * does not fit in size_t). */
GPURNN_API gpurnn_status gpurnn_model_save_size(const gpurnn_model *m, size_t user_data_size, size_t *size);

/* Writes m's checkpoint, holding user_data[0 .. user_data_size), into buffer: the same
 * bytes gpurnn_model_save_with_user_data would write to a file. buffer_size must be at
 * least gpurnn_model_save_size(m, user_data_size); *written (may be NULL) receives the
 * bytes written, which is that size. On failure the buffer is left as it was (the values
 * are checked before the first byte is written).
 * Errors: INVALID_ARGUMENT (NULL, user data as for save_with_user_data, buffer_size too
 * small: the message gives the size needed), NUMERIC, CUDA. */
GPURNN_API gpurnn_status gpurnn_model_save_to_memory(const gpurnn_model *m, const void *user_data,
                                                     size_t user_data_size, void *buffer,
                                                     size_t buffer_size, size_t *written);

/* Creates a model from a checkpoint file on the given backend (AUTO, CPU or CUDA, whatever
 * wrote it), ignoring any user data in it (still checksummed). The file is fully validated
 * (sizes, enum values, checksum) before the model is allocated. *out is set only on
 * success.
 * Errors: INVALID_ARGUMENT, IO, FORMAT (truncated, damaged, wrong version, absurd sizes:
 * the message says which), BACKEND_UNAVAILABLE, OUT_OF_MEMORY, CUDA. */
GPURNN_API gpurnn_status gpurnn_model_load(const char *path, gpurnn_backend backend, gpurnn_model **out);

/* As gpurnn_model_load, and also returns the checkpoint's user data: *user_data points to
 * a new buffer of *user_data_size bytes, allocated by the library, that the caller frees
 * with gpurnn_user_data_free; when the checkpoint has none (a version-1 file, or one saved
 * without), *user_data is NULL and *user_data_size 0. user_data and user_data_size are
 * either both NULL (the user data is checked but not returned) or both given. On failure
 * *out, *user_data and *user_data_size are untouched and nothing is left allocated.
 * Errors: as gpurnn_model_load. */
GPURNN_API gpurnn_status gpurnn_model_load_with_user_data(const char *path, gpurnn_backend backend,
                                                          void **user_data, size_t *user_data_size,
                                                          gpurnn_model **out);

/* As gpurnn_model_load_with_user_data, from the size bytes at data (a whole checkpoint,
 * e.g. from gpurnn_model_save_to_memory or read from any storage). The library only reads
 * data, and keeps no pointer to it; data may be NULL only when size is 0.
 * Errors: INVALID_ARGUMENT (NULL data, NULL out, half of the user-data pair), FORMAT (as
 * for files; the message says "memory buffer" where a file's path would be),
 * BACKEND_UNAVAILABLE, OUT_OF_MEMORY, CUDA. */
GPURNN_API gpurnn_status gpurnn_model_load_from_memory(const void *data, size_t size, gpurnn_backend backend,
                                                       void **user_data, size_t *user_data_size,
                                                       gpurnn_model **out);

/* Frees user data returned by gpurnn_model_load_with_user_data or _load_from_memory.
 * NULL is allowed. */
GPURNN_API void gpurnn_user_data_free(void *user_data);

/* A static English name for a status ("GPURNN_ERR_FORMAT: ..."); never NULL. */
GPURNN_API const char *gpurnn_status_string(gpurnn_status s);
/* The message of this thread's last failed call ("" if none). Valid until the next
 * call into the library from this thread. */
GPURNN_API const char *gpurnn_last_error(void);
/* "MAJOR.MINOR.PATCH". */
GPURNN_API const char *gpurnn_version(void);

#ifdef __cplusplus
}
#endif

#endif /* GPURNN_H */
