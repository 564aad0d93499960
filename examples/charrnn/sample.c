/* gpurnn-charrnn sample: text from a checkpoint, optionally continuing a prime text. */
#include "checkpoint.h"
#include "commands.h"
#include "generate.h"
#include "text_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int charrnn_command_sample(const charrnn_options *o)
{
    charrnn_error err;
    charrnn_checkpoint ck;
    gpurnn_model *model = NULL;
    if (charrnn_checkpoint_load(o->sample_checkpoint, (gpurnn_backend)o->backend, &ck, &model,
                                &err) != 0) {
        fprintf(stderr, "gpurnn-charrnn: %s\n", err.message);
        return CHARRNN_EXIT_FAILURE;
    }
    unsigned char default_prime = charrnn_default_prime(&ck.vocab);
    const unsigned char *prime = o->prime ? (const unsigned char *)o->prime : &default_prime;
    size_t prime_len = o->prime ? strlen(o->prime) : 1;

    charrnn_sampler sampler;
    unsigned char *text = charrnn_xmalloc((size_t)o->length);
    int rc = CHARRNN_EXIT_OK;
    if (charrnn_sampler_create(&sampler, model, &err) != 0) {
        rc = CHARRNN_EXIT_FAILURE;
    } else {
        if (charrnn_generate(&sampler, &ck.vocab, prime, prime_len, o->length, o->temperature,
                             o->seed, text, &err) != 0)
            rc = CHARRNN_EXIT_FAILURE;
        charrnn_sampler_destroy(&sampler);
    }
    if (rc == CHARRNN_EXIT_OK) {
        /* The prime, then its continuation up to its last whole character; the default
         * newline prime is not shown. On a terminal, control bytes are shown escaped. */
        int escape = isatty(STDOUT_FILENO);
        size_t len = charrnn_utf8_whole_length(text, (size_t)o->length);
        if (o->prime)
            charrnn_write_text(stdout, prime, prime_len, escape);
        charrnn_write_text(stdout, text, len, escape);
        if (len == 0 || text[len - 1] != '\n')
            fputc('\n', stdout);
        fflush(stdout);
    } else {
        fprintf(stderr, "gpurnn-charrnn: %s\n", err.message);
    }
    free(text);
    gpurnn_model_destroy(model);
    charrnn_checkpoint_free(&ck);
    return rc;
}
