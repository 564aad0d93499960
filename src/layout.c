#include <stdio.h>

#include "model.h"

size_t gpurnn_layout_param_count(size_t V, size_t H) { return 2 * H * V + H * H + H + V; }

size_t gpurnn_layout_offset(size_t V, size_t H, gpurnn_tensor t)
{
    switch (t) {
    case GPURNN_WXH: return 0;
    case GPURNN_WHH: return H * V;
    case GPURNN_WHY: return H * V + H * H;
    case GPURNN_BH: return 2 * H * V + H * H;
    case GPURNN_BY: return 2 * H * V + H * H + H;
    default: return 0;
    }
}

size_t gpurnn_layout_size(size_t V, size_t H, gpurnn_tensor t)
{
    switch (t) {
    case GPURNN_WXH: return H * V;
    case GPURNN_WHH: return H * H;
    case GPURNN_WHY: return V * H;
    case GPURNN_BH: return H;
    case GPURNN_BY: return V;
    default: return 0;
    }
}

const char *gpurnn_tensor_name(gpurnn_tensor t)
{
    static const char *const names[GPURNN_NUM_TENSORS] = {"Wxh", "Whh", "Why", "bh", "by"};
    return (unsigned)t < GPURNN_NUM_TENSORS ? names[t] : "?";
}

void gpurnn_layout_describe(size_t V, size_t H, size_t i, char *buf, size_t cap)
{
    for (int t = GPURNN_NUM_TENSORS - 1; t >= 0; t--) {
        size_t offset = gpurnn_layout_offset(V, H, (gpurnn_tensor)t);
        if (i < offset) continue;
        size_t local = i - offset;
        if (t == GPURNN_BH || t == GPURNN_BY) {
            snprintf(buf, cap, "%s[%zu]", gpurnn_tensor_name((gpurnn_tensor)t), local);
        } else {
            size_t cols = t == GPURNN_WXH ? V : H;
            snprintf(buf, cap, "%s[%zu, %zu]", gpurnn_tensor_name((gpurnn_tensor)t), local / cols,
                     local % cols);
        }
        return;
    }
    snprintf(buf, cap, "entry %zu", i);
}
