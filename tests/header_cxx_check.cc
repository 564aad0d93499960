// The public header compiles as C++ too (extern "C", no C-only constructs) under
// -Wall -Wextra -Werror -pedantic, and its functions link from C++.
#include "gpurnn.h"

#include <cstdio>

int main()
{
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = 4;
    cfg.hidden_size = 3;
    cfg.batch_size = 2;
    cfg.max_seq_len = 2;
    gpurnn_model *m = nullptr;
    gpurnn_status st = gpurnn_model_create(&cfg, &m);
    if (st != GPURNN_OK) {
        std::fprintf(stderr, "gpurnn_model_create: %s: %s\n", gpurnn_status_string(st), gpurnn_last_error());
        return 1;
    }
    const int32_t in[4] = {0, 1, 2, 3}, tg[4] = {1, 2, 3, 0};
    double loss = 0;
    st = gpurnn_forward(m, in, tg, 2, &loss);
    const bool ok = st == GPURNN_OK && loss > 0 && gpurnn_param_count(m) == 2 * 3 * 4 + 9 + 3 + 4 &&
                    gpurnn_model_backend(m) != GPURNN_BACKEND_AUTO;
    gpurnn_model_destroy(m);
    if (!ok) {
        std::fprintf(stderr, "forward: %s: %s\n", gpurnn_status_string(st), gpurnn_last_error());
        return 1;
    }
    std::printf("libgpurnn %s: header compiles as C++, loss %.6f\n", gpurnn_version(), loss);
    return 0;
}
