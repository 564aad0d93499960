/* A training call made from inside the caller's own OpenMP parallel region runs on that
 * one thread (src/cpu/cpu_impl.h, caller_threads): the same gradients, bit for bit, as a
 * one-thread call, and no thread of the model's pool is started. Exits 0 on success. */
#include <dirent.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpurnn.h"

enum { V = 128, H = 256, B = 32, T = 60 };

static int thread_count(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

/* Gradients of one forward and backward into g; returns the parameter count, 0 on failure. */
static size_t gradients(double *g, size_t cap)
{
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = V;
    cfg.hidden_size = H;
    cfg.batch_size = B; /* B*H*H large enough for the batch to be split over threads */
    cfg.max_seq_len = T;
    cfg.backend = GPURNN_BACKEND_CPU;
    cfg.seed = 3;
    cfg.init_scale = 0.1;
    gpurnn_model *m = NULL;
    if (gpurnn_model_create(&cfg, &m) != GPURNN_OK) return 0;
    static int32_t x[T * B], y[T * B];
    for (int i = 0; i < T * B; i++) {
        x[i] = (i * 5) % V;
        y[i] = (i * 11) % V;
    }
    double loss;
    size_t n = gpurnn_param_count(m);
    int ok = n <= cap && gpurnn_forward(m, x, y, T, &loss) == GPURNN_OK && gpurnn_backward(m) == GPURNN_OK &&
             gpurnn_grads_get(m, g, n) == GPURNN_OK;
    gpurnn_model_destroy(m);
    return ok ? n : 0;
}

int main(void)
{
    enum { CAP = 200000 };
    double *alone = calloc(CAP, sizeof(double)), *inside = calloc(CAP, sizeof(double));
    if (!alone || !inside) return 1;
    omp_set_num_threads(1);
    const size_t n = gradients(alone, CAP);
    if (n == 0) {
        fprintf(stderr, "one-thread run failed: %s\n", gpurnn_last_error());
        return 1;
    }
    omp_set_num_threads(2);
    size_t n_inside = 0;
    int team = 0, during = 0;
    const int before = thread_count();
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        {
            team = omp_get_num_threads();
            n_inside = gradients(inside, CAP);
            during = thread_count();
        }
    }
    int failed = 0;
    if (n_inside != n) {
        fprintf(stderr, "the call inside the region failed: %s\n", gpurnn_last_error());
        failed = 1;
    } else if (memcmp(alone, inside, n * sizeof(double)) != 0) {
        fprintf(stderr, "the gradients inside a parallel region differ from the one-thread run\n");
        failed = 1;
    }
    if (during > before + (team - 1)) {
        fprintf(stderr, "%d threads during the call, %d before and a team of %d: the model started threads\n", during,
                before, team);
        failed = 1;
    }
    if (!failed) printf("inside a team of %d: the one-thread gradients, bit for bit; %d threads\n", team, during);
    free(alone);
    free(inside);
    return failed;
}
