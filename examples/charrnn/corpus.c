/* Reading the training text, and the built-in corpus. */
#define _POSIX_C_SOURCE 200809L
#include "corpus.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int charrnn_text_read_file(const char *path, charrnn_text *out, charrnn_error *err)
{
    out->bytes = NULL;
    out->len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return charrnn_fail(err, "cannot read %s: %s", path, strerror(errno));
    /* fopen succeeds on a directory; reading it would fail with a less clear reason. */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return charrnn_fail(err, "cannot read %s: it is a directory", path);
    }
    size_t cap = 1 << 16, len = 0;
    unsigned char *bytes = charrnn_xmalloc(cap);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            bytes = charrnn_xrealloc(bytes, cap);
        }
        size_t got = fread(bytes + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    int read_error = ferror(f);
    int saved_errno = errno;
    fclose(f);
    if (read_error) {
        free(bytes);
        return charrnn_fail(err, "cannot read %s: %s", path, strerror(saved_errno));
    }
    out->bytes = bytes;
    out->len = len;
    return 0;
}

void charrnn_text_free(charrnn_text *text)
{
    free(text->bytes);
    text->bytes = NULL;
    text->len = 0;
}

uint64_t charrnn_text_hash(const unsigned char *bytes, size_t len)
{
    uint64_t h = 0xCBF29CE484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= bytes[i];
        h *= 0x100000001B3ULL;
    }
    return h;
}

/* ---- the built-in corpus -----------------------------------------------------------
 *
 * "The Harbour", a play in the layout of tinyshakespeare (a speaker's name in capitals
 * and a colon on its own line, then the speech, then a blank line), written from a small
 * grammar: 16 line templates whose slots take nouns, adjectives, verbs, places, times and
 * names from the lists below, chosen by a SplitMix64 generator with a fixed seed. A model
 * learns the spelling of about 120 words, the layout and some grammar within a minute,
 * which makes it a good demo; the choice of each word stays random, which keeps the loss
 * well above zero however long it trains: even a model that knew the grammar would still
 * have to guess each word. */

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

static const char *const speakers[] = {"CAPTAIN", "MARINER", "KEEPER", "WIDOW", "PILOT", "BOY"};
static const char *const addressed[] = {"Captain", "Mariner", "Keeper", "Widow", "Pilot", "boy"};
static const char *const nouns[] = {"ship",  "sea",    "wind",  "lantern", "rope",  "bell",
                                    "storm", "anchor", "gull",  "tide",    "star",  "net",
                                    "sail",  "moon",   "light", "shore",   "letter", "heart"};
static const char *const adjectives[] = {"dark",  "cold",   "old",    "bright", "silent", "grey",
                                         "wild",  "gentle", "broken", "golden", "salt",   "weary"};
/* Each verb in its plain and its third-person form. */
static const char *const verbs[][2] = {
    {"watch", "watches"}, {"mend", "mends"},   {"hear", "hears"},   {"follow", "follows"},
    {"carry", "carries"}, {"find", "finds"},   {"keep", "keeps"},   {"call", "calls"},
    {"remember", "remembers"}, {"light", "lights"}, {"lose", "loses"}, {"bless", "blesses"}};
static const char *const places[] = {"harbour", "quay",  "tower", "chapel", "market",
                                     "beach",   "cliff", "inn",   "bay",    "lighthouse"};
static const char *const times[] = {"dawn", "noon", "dusk", "midnight", "the morning", "the spring tide"};
static const char *const interjections[] = {"Alas", "Hark", "Look", "Peace", "Come", "Listen"};

/* One line of speech. Slots: $N noun, $A adjective, $V verb, $S verb (third person),
 * $P place, $T time, $X the person addressed, $I interjection. */
static const char *const templates[] = {
    "The $A $N $S upon the $P.",
    "I $V the $N of the $P.",
    "Where is the $N, $X?",
    "$I! the $N is $A tonight.",
    "Go to the $P and $V the $N.",
    "We shall $V the $N before $T.",
    "Have you seen the $A $N?",
    "No, $X; the $N is in the $P.",
    "Then let us $V the $N, for the $P is $A.",
    "My $N is $A, and the $N $S at $T.",
    "Tell me, $X, who $S the $N?",
    "It is $A, it is $A, and the $P is far.",
    "O $A $N, why do you $V me?",
    "I will $V the $N and $V the $N.",
    "The $N of the $P $S no more.",
    "At $T the $A $N came into the $P.",
};

typedef struct buffer {
    char *data;
    size_t len, cap;
} buffer;

static void append(buffer *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap *= 2;
        b->data = charrnn_xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, s, n + 1);
    b->len += n;
}

static void append_line(buffer *b, charrnn_rng *rng, int speaker)
{
    const char *t = templates[charrnn_rng_below(rng, COUNT(templates))];
    for (; *t; t++) {
        if (*t != '$') {
            char one[2] = {*t, '\0'};
            append(b, one);
            continue;
        }
        const char *word = NULL;
        switch (*++t) {
        case 'N': word = nouns[charrnn_rng_below(rng, COUNT(nouns))]; break;
        case 'A': word = adjectives[charrnn_rng_below(rng, COUNT(adjectives))]; break;
        case 'V': word = verbs[charrnn_rng_below(rng, COUNT(verbs))][0]; break;
        case 'S': word = verbs[charrnn_rng_below(rng, COUNT(verbs))][1]; break;
        case 'P': word = places[charrnn_rng_below(rng, COUNT(places))]; break;
        case 'T': word = times[charrnn_rng_below(rng, COUNT(times))]; break;
        case 'I': word = interjections[charrnn_rng_below(rng, COUNT(interjections))]; break;
        case 'X': {
            /* Nobody addresses themself. */
            uint32_t other = charrnn_rng_below(rng, COUNT(addressed) - 1);
            word = addressed[other >= (uint32_t)speaker ? other + 1 : other];
            break;
        }
        default: word = "?"; break; /* not reached: every template uses known slots */
        }
        append(b, word);
    }
    append(b, "\n");
}

void charrnn_text_builtin(charrnn_text *out)
{
    enum { TARGET_BYTES = 110000 };
    buffer b = {charrnn_xmalloc(1 << 17), 0, 1 << 17};
    b.data[0] = '\0';
    charrnn_rng rng = {20240601};
    append(&b, "THE HARBOUR\n\n");
    int scene = 0, speeches_left = 0, last_speaker = -1;
    while (b.len < TARGET_BYTES) {
        if (speeches_left == 0) {
            char header[96];
            snprintf(header, sizeof header, "SCENE %d. The %s, at %s.\n\n", ++scene,
                     places[charrnn_rng_below(&rng, COUNT(places))],
                     times[charrnn_rng_below(&rng, COUNT(times))]);
            append(&b, header);
            speeches_left = 8 + (int)charrnn_rng_below(&rng, 12);
        }
        int speaker;
        do /* speakers take turns: never the same one twice in a row */
            speaker = (int)charrnn_rng_below(&rng, COUNT(speakers));
        while (speaker == last_speaker);
        last_speaker = speaker;
        append(&b, speakers[speaker]);
        append(&b, ":\n");
        int lines = 1 + (int)charrnn_rng_below(&rng, 3);
        for (int i = 0; i < lines; i++)
            append_line(&b, &rng, speaker);
        append(&b, "\n");
        speeches_left--;
    }
    out->bytes = (unsigned char *)b.data;
    out->len = b.len;
}
