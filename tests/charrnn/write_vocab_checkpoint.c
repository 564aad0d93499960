/* Writes a checkpoint that gpurnn-charrnn can sample, using only the libgpurnn API and the
 * user-data layout documented in examples/charrnn/README.md (no gpurnn-charrnn code): the
 * model of "another program", with a vocabulary and no training state.
 *
 *   write_vocab_checkpoint OUT.ckpt
 *
 * The model is built by hand to spell "abc" over and over: vocabulary {'a', 'b', 'c'},
 * H = 3, and weights that make the hidden state a one-hot copy of the current input and
 * the output predict its successor, so that argmax sampling primed with "a" prints
 * "abcabc...". */
#include <gpurnn.h>

#include <stdio.h>
#include <string.h>

static size_t put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
    return 4;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: write_vocab_checkpoint OUT.ckpt\n");
        return 2;
    }
    enum { V = 3, H = 3 };
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = V;
    cfg.hidden_size = H;
    cfg.batch_size = 2; /* another program's B: the sampler makes its own B = 1 copy */
    cfg.max_seq_len = 10;
    cfg.dtype = GPURNN_F32;
    cfg.backend = GPURNN_BACKEND_CPU;
    gpurnn_model *m = NULL;
    if (gpurnn_model_create(&cfg, &m) != GPURNN_OK) goto fail;

    double p[2 * H * V + H * H + H + V];
    memset(p, 0, sizeof p);
    double *Wxh = p, *Why = p + H * V + H * H;
    for (int i = 0; i < V; i++) {
        Wxh[i * V + i] = 4.0;              /* h = tanh(4 * onehot(x)) */
        Why[((i + 1) % V) * H + i] = 10.0; /* y favours the successor of x */
    }
    if (gpurnn_params_set(m, p, sizeof p / sizeof p[0]) != GPURNN_OK) goto fail;

    /* The user data, version 1, parts 0 (vocabulary only). */
    unsigned char blob[64];
    size_t n = 0;
    memcpy(blob, "CHARRNN\0", 8);
    n += 8;
    n += put_u32(blob + n, 1);
    n += put_u32(blob + n, 0);
    n += put_u32(blob + n, V);
    memcpy(blob + n, "abc", V);
    n += V;
    if (gpurnn_model_save_with_user_data(m, blob, n, argv[1]) != GPURNN_OK) goto fail;
    gpurnn_model_destroy(m);
    return 0;
fail:
    fprintf(stderr, "write_vocab_checkpoint: %s\n", gpurnn_last_error());
    gpurnn_model_destroy(m);
    return 1;
}
