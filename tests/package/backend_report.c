/* Prints why CUDA is or is not usable and which module file libgpurnn tried; exits 0 when
 * CUDA is unavailable (what the package test's "no CUDA libraries" step expects), 3 when
 * it is usable. */
#include <gpurnn.h>
#include <stdio.h>

int main(void)
{
    gpurnn_status s = gpurnn_backend_check(GPURNN_BACKEND_CUDA);
    const char *module = gpurnn_backend_module(GPURNN_BACKEND_CUDA);
    if (s == GPURNN_OK) {
        printf("CUDA usable (module %s)\n", module ? module : "?");
        return 3;
    }
    printf("CUDA unavailable: %s\n", gpurnn_last_error());
    return 0;
}
