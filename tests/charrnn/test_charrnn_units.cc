// Unit tests of gpurnn-charrnn's modules (examples/charrnn/): the vocabulary, the data
// pipeline (split, stream layout, wrap-around), the held-out loss, the built-in corpus,
// the checkpoint file,
// sampling, the plot and option parsing. The program itself is tested end to end by
// run_cli_test.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "checkpoint.h"
#include "corpus.h"
#include "evaluate.h"
#include "fileio.h"
#include "generate.h"
#include "options.h"
#include "plot.h"
#include "streams.h"
#include "text_out.h"
#include "vocab.h"

namespace {

const unsigned char *bytes_of(const std::string &s)
{
    return reinterpret_cast<const unsigned char *>(s.data());
}

// A scratch directory per test, removed afterwards.
class TempDir {
  public:
    TempDir()
    {
        char tmpl[] = "/tmp/charrnn-test-XXXXXX";
        path_ = mkdtemp(tmpl);
    }
    ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
    std::string file(const std::string &name) const { return path_ + "/" + name; }

  private:
    std::string path_;
};

std::string read_all(const std::string &path)
{
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_all(const std::string &path, const std::string &data)
{
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << data;
}

// ---- vocabulary ---------------------------------------------------------------------------

TEST(Vocab, IsTheSortedSetOfBytes)
{
    std::string text = "hello, world\n";
    charrnn_vocab v;
    charrnn_vocab_build(&v, bytes_of(text), text.size());
    std::string expected = "\n ,dehlorw";
    ASSERT_EQ(v.size, (int)expected.size());
    for (int i = 0; i < v.size; i++) {
        EXPECT_EQ(v.chars[i], (unsigned char)expected[i]);
        EXPECT_EQ(v.id_of[(unsigned char)expected[i]], i);
    }
    EXPECT_EQ(v.id_of['z'], -1);
}

TEST(Vocab, EncodeNamesTheUnknownCharacters)
{
    std::string text = "abc";
    charrnn_vocab v;
    charrnn_vocab_build(&v, bytes_of(text), text.size());
    std::vector<int32_t> ids(8);
    charrnn_error err;
    std::string good = "cab";
    ASSERT_EQ(charrnn_vocab_encode(&v, bytes_of(good), good.size(), ids.data(), "x", &err), 0);
    EXPECT_EQ(ids[0], 2);
    EXPECT_EQ(ids[1], 0);
    EXPECT_EQ(ids[2], 1);
    std::string bad = "aZb\nZ";
    ASSERT_EQ(charrnn_vocab_encode(&v, bytes_of(bad), bad.size(), ids.data(), "the prime text", &err), -1);
    EXPECT_STREQ(err.message,
                 "the prime text has characters that are not in the model's vocabulary: '\\n', 'Z'");
}

TEST(Vocab, FromCharsRejectsWhatIsNotASortedSet)
{
    charrnn_vocab v;
    const unsigned char sorted[] = {'\n', 'a', 'b'}, unsorted[] = {'b', 'a'}, repeated[] = {'a', 'a'};
    EXPECT_EQ(charrnn_vocab_from_chars(&v, sorted, 3, nullptr), 0);
    EXPECT_EQ(v.id_of['b'], 2);
    EXPECT_EQ(charrnn_vocab_from_chars(&v, unsorted, 2, nullptr), -1);
    EXPECT_EQ(charrnn_vocab_from_chars(&v, repeated, 2, nullptr), -1);
    EXPECT_EQ(charrnn_vocab_from_chars(&v, sorted, 0, nullptr), -1);
}

TEST(Vocab, DescribesTheDifference)
{
    std::string a = "abcd", b = "abxy";
    charrnn_vocab va, vb;
    charrnn_vocab_build(&va, bytes_of(a), a.size());
    charrnn_vocab_build(&vb, bytes_of(b), b.size());
    EXPECT_FALSE(charrnn_vocab_equal(&va, &vb));
    EXPECT_TRUE(charrnn_vocab_equal(&va, &va));
    char out[256];
    charrnn_vocab_describe_difference(&va, &vb, out, sizeof out);
    EXPECT_STREQ(out, "without 'c', 'd'; with new 'x', 'y'");
}

TEST(Vocab, DisplaysBytesReadably)
{
    char out[16];
    charrnn_char_display('a', out, sizeof out);
    EXPECT_STREQ(out, "'a'");
    charrnn_char_display('\n', out, sizeof out);
    EXPECT_STREQ(out, "'\\n'");
    charrnn_char_display(0xC3, out, sizeof out);
    EXPECT_STREQ(out, "'\\xc3'");
}

// ---- data pipeline ------------------------------------------------------------------------

TEST(Split, HoldsOutTheTail)
{
    charrnn_split s;
    charrnn_error err;
    ASSERT_EQ(charrnn_split_text(1000, 0.05, 4, 8, &s, &err), 0);
    EXPECT_EQ(s.val_len, 50u);
    EXPECT_EQ(s.train_len, 950u);
    ASSERT_EQ(charrnn_split_text(1000, 0.0, 4, 8, &s, &err), 0);
    EXPECT_EQ(s.val_len, 0u);
    EXPECT_EQ(s.train_len, 1000u);
    // A tail of one byte cannot hold an (input, target) pair: no validation.
    ASSERT_EQ(charrnn_split_text(30, 0.05, 1, 8, &s, &err), 0);
    EXPECT_EQ(s.val_len, 0u);
    EXPECT_EQ(s.train_len, 30u);
}

TEST(Split, RefusesTextsTooShortForAWindow)
{
    charrnn_split s;
    charrnn_error err;
    EXPECT_EQ(charrnn_split_text(64, 0.0, 1, 64, &s, &err), -1);
    EXPECT_NE(std::strstr(err.message, "the text has 64 bytes; --batch 1 streams of --seq-len 64 characters, "
                                       "with --val-fraction 0 of it held out, need at least 65"),
              nullptr)
        << err.message;
    EXPECT_EQ(charrnn_split_text(65, 0.0, 1, 64, &s, &err), 0);
    // The true minimum at once, whatever the size given: 32 x 64 + 1 bytes to train on
    // after 5% held out is 2156 bytes.
    for (size_t n : {1, 100, 2155}) {
        EXPECT_EQ(charrnn_split_text(n, 0.05, 32, 64, &s, &err), -1);
        EXPECT_NE(std::strstr(err.message, "need at least 2156"), nullptr) << err.message;
    }
    for (size_t n = 2156; n < 2300; n++)
        EXPECT_EQ(charrnn_split_text(n, 0.05, 32, 64, &s, &err), 0) << n;
    // Enough for one stream, not for four.
    EXPECT_EQ(charrnn_split_text(100, 0.0, 4, 64, &s, &err), -1);
    EXPECT_NE(std::strstr(err.message, "--batch 4"), nullptr) << err.message;
    EXPECT_EQ(charrnn_split_text(1000, 0.6, 1, 8, &s, &err), -1);
    EXPECT_NE(std::strstr(err.message, "--val-fraction"), nullptr) << err.message;
}

TEST(Streams, AreEvenlySpacedAndWindowsContinue)
{
    // Token i has the value i, so each filled slot shows where it was read from.
    const int B = 3, T = 4;
    std::vector<int32_t> ids(40);
    for (int i = 0; i < 40; i++)
        ids[i] = i;
    charrnn_streams s;
    charrnn_error err;
    ASSERT_EQ(charrnn_streams_init(&s, ids.data(), ids.size(), B, T, &err), 0);
    EXPECT_EQ(s.stream_len, 13u); // (40 - 1) / 3
    EXPECT_EQ(s.windows, 3u);     // 13 / 4: the last input of each stream is skipped
    std::vector<int32_t> in(B * T), tg(B * T);
    for (size_t w = 0; w < s.windows; w++) {
        charrnn_streams_fill(&s, w * T, T, in.data(), tg.data());
        for (int t = 0; t < T; t++)
            for (int b = 0; b < B; b++) {
                int expected = b * 13 + (int)w * T + t; // time-major [t][b]
                EXPECT_EQ(in[t * B + b], expected) << "w=" << w << " t=" << t << " b=" << b;
                EXPECT_EQ(tg[t * B + b], expected + 1);
            }
    }
    // A shorter read (as validation does at the end of its streams).
    charrnn_streams_fill(&s, 12, 1, in.data(), tg.data());
    EXPECT_EQ(in[0], 12);
    EXPECT_EQ(in[2], 26 + 12);
    EXPECT_EQ(tg[2], 26 + 13); // the last token the streams read: index 39
}

TEST(Streams, CursorWrapsAtTheEndOfAnEpoch)
{
    std::vector<int32_t> ids(40, 0);
    charrnn_streams s;
    ASSERT_EQ(charrnn_streams_init(&s, ids.data(), ids.size(), 3, 4, nullptr), 0);
    charrnn_cursor c = {0, 0};
    EXPECT_EQ(charrnn_cursor_advance(&c, &s), 0);
    EXPECT_EQ(charrnn_cursor_advance(&c, &s), 0);
    EXPECT_EQ(c.window, 2u);
    EXPECT_EQ(charrnn_cursor_advance(&c, &s), 1); // wrapped: a new epoch from a zero state
    EXPECT_EQ(c.window, 0u);
    EXPECT_EQ(c.epoch, 1u);
    for (int i = 0; i < 6; i++)
        charrnn_cursor_advance(&c, &s);
    EXPECT_EQ(c.epoch, 3u);
    EXPECT_EQ(c.window, 0u);
}

TEST(Streams, ValidationBatchLeavesEachStreamAWindow)
{
    EXPECT_EQ(charrnn_validation_batch(55769, 32, 128), 32);
    EXPECT_EQ(charrnn_validation_batch(1001, 32, 100), 10);
    EXPECT_EQ(charrnn_validation_batch(50, 32, 100), 1);
    charrnn_streams s;
    int32_t ids[3] = {0, 1, 2};
    EXPECT_EQ(charrnn_streams_init(&s, ids, 3, 4, 1, nullptr), -1); // 3 tokens, 4 streams
}

// ---- corpus ---------------------------------------------------------------------------------

// A model trained briefly on the built-in corpus, for the held-out loss tests.
struct TrainedModel {
    charrnn_text text{};
    charrnn_vocab vocab{};
    std::vector<int32_t> ids;
    gpurnn_model *model = nullptr;
    ~TrainedModel()
    {
        gpurnn_model_destroy(model);
        charrnn_text_free(&text);
    }
};

gpurnn_model *make_model(int V, int B, int T)
{
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = V;
    cfg.hidden_size = 64;
    cfg.batch_size = B;
    cfg.max_seq_len = T;
    cfg.backend = GPURNN_BACKEND_CPU;
    cfg.reduction = GPURNN_LOSS_MEAN;
    gpurnn_model *m = nullptr;
    EXPECT_EQ(gpurnn_model_create(&cfg, &m), GPURNN_OK) << gpurnn_last_error();
    return m;
}

void train_briefly(TrainedModel *t, size_t train_len)
{
    charrnn_text_builtin(&t->text);
    charrnn_vocab_build(&t->vocab, t->text.bytes, t->text.len);
    t->ids.resize(t->text.len);
    ASSERT_EQ(charrnn_vocab_encode(&t->vocab, t->text.bytes, t->text.len, t->ids.data(), "corpus", nullptr), 0);
    const int B = 16, T = 32;
    t->model = make_model(t->vocab.size, B, T);
    ASSERT_NE(t->model, nullptr);
    charrnn_streams train;
    ASSERT_EQ(charrnn_streams_init(&train, t->ids.data(), train_len, B, T, nullptr), 0);
    std::vector<int32_t> in((size_t)B * T), tg((size_t)B * T);
    gpurnn_optimizer adam{};
    adam.kind = GPURNN_ADAM;
    adam.learning_rate = 0.01;
    for (size_t w = 0; w < 150; w++) {
        charrnn_streams_fill(&train, (w % train.windows) * T, T, in.data(), tg.data());
        double loss;
        ASSERT_EQ(gpurnn_zero_grad(t->model), GPURNN_OK);
        ASSERT_EQ(gpurnn_forward(t->model, in.data(), tg.data(), T, &loss), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(t->model), GPURNN_OK);
        ASSERT_EQ(gpurnn_clip_grad_norm(t->model, 5.0, nullptr), GPURNN_OK);
        ASSERT_EQ(gpurnn_step(t->model, &adam), GPURNN_OK);
    }
}

// One stream over the whole tail after the same warm-up: what "the loss of the held-out
// text" means.
double single_stream_loss(const TrainedModel &t, size_t val_start, size_t val_len, int warmup)
{
    const int T = 32;
    gpurnn_model *one = make_model(t.vocab.size, 1, T);
    std::vector<double> params(gpurnn_param_count(t.model));
    EXPECT_EQ(gpurnn_params_get(t.model, params.data(), params.size()), GPURNN_OK);
    EXPECT_EQ(gpurnn_params_set(one, params.data(), params.size()), GPURNN_OK);
    double sum = 0, loss = 0;
    size_t scored = 0;
    for (size_t at = val_start - warmup; at + 1 < val_start + val_len;) {
        int steps = (int)std::min<size_t>(T, val_start + val_len - 1 - at);
        if (at < val_start && at + steps > val_start) steps = (int)(val_start - at);
        EXPECT_EQ(gpurnn_forward(one, &t.ids[at], &t.ids[at + 1], steps, &loss), GPURNN_OK);
        if (at >= val_start) {
            sum += loss * steps;
            scored += (size_t)steps;
        }
        at += (size_t)steps;
    }
    gpurnn_model_destroy(one);
    return sum / (double)scored;
}

// The held-out figure is the per-character loss of the held-out text: with 16 warmed-up
// streams it agrees with one stream over the whole tail within 1% (0.01% measured); the same streams
// started from a zero state are further off (they were the trainer's figure before).
TEST(Evaluate, WarmedUpStreamsAgreeWithOneStreamOverTheWholeTail)
{
    TrainedModel t;
    train_briefly(&t, 100000);
    const size_t val_start = 100000, val_len = t.ids.size() - val_start;
    const int streams = charrnn_validation_batch(val_len, 16, 32);
    gpurnn_model *eval = make_model(t.vocab.size, streams, 32);
    ASSERT_NE(eval, nullptr);
    charrnn_error err{};
    double warmed = 0, cold = 0;
    ASSERT_EQ(charrnn_evaluate(t.model, eval, t.ids.data(), val_start, val_len, 32, CHARRNN_VAL_WARMUP, &warmed,
                               &err), 0)
        << err.message;
    ASSERT_EQ(charrnn_evaluate(t.model, eval, t.ids.data(), val_start, val_len, 32, 0, &cold, &err), 0)
        << err.message;
    const double reference = single_stream_loss(t, val_start, val_len, CHARRNN_VAL_WARMUP);
    std::printf("held-out loss: %d warmed-up streams %.5f, from zero %.5f, one stream %.5f\n", streams, warmed,
                cold, reference);
    EXPECT_NEAR(warmed, reference, 0.01 * reference)
        << "streams " << streams << ", warmed " << warmed << ", zero-state " << cold;
    EXPECT_LT(std::fabs(warmed - reference), std::fabs(cold - reference))
        << "warmed " << warmed << ", zero-state " << cold << ", one stream " << reference;
    // the same positions every time: the same model gives the same figure
    double again = 0;
    ASSERT_EQ(charrnn_evaluate(t.model, eval, t.ids.data(), val_start, val_len, 32, CHARRNN_VAL_WARMUP, &again,
                               &err), 0);
    EXPECT_EQ(again, warmed);
    gpurnn_model_destroy(eval);
}

TEST(TextOut, SamplesEndAtAWholeUtf8Character)
{
    const std::string euro = "a\xe2\x82\xac";  // a, then the 3-byte euro sign
    for (size_t cut = 1; cut <= 4; cut++) {
        const size_t whole = charrnn_utf8_whole_length(bytes_of(euro), cut);
        EXPECT_EQ(whole, cut == 4 ? 4u : 1u) << "cut after " << cut << " bytes";
    }
    EXPECT_EQ(charrnn_utf8_whole_length(bytes_of("abc"), 3), 3u);
    EXPECT_EQ(charrnn_utf8_whole_length(bytes_of("\xc3\xa9"), 2), 2u);  // e acute, whole
    EXPECT_EQ(charrnn_utf8_whole_length(bytes_of("x\xc3"), 2), 1u);
    // not UTF-8 (stray continuation bytes after ASCII): left as it is
    EXPECT_EQ(charrnn_utf8_whole_length(bytes_of("x\x80\x80\x80\x80"), 5), 5u);
}

TEST(TextOut, ControlBytesAreEscapedForATerminal)
{
    const std::string raw("a\0b\x1b[2J\tc\n\x7f\xc3\xa9", 13);
    char buf[128] = {};
    FILE *f = fmemopen(buf, sizeof buf, "w");
    ASSERT_NE(f, nullptr);
    charrnn_write_text(f, bytes_of(raw), raw.size(), 1);
    fclose(f);
    EXPECT_STREQ(buf, "a\\x00b\\x1b[2J\tc\n\\x7f\xc3\xa9");
}

TEST(Corpus, BuiltInIsDeterministic)
{
    charrnn_text a, b;
    charrnn_text_builtin(&a);
    charrnn_text_builtin(&b);
    ASSERT_EQ(a.len, b.len);
    EXPECT_GE(a.len, 100000u);
    EXPECT_EQ(std::memcmp(a.bytes, b.bytes, a.len), 0);
    std::string start(reinterpret_cast<char *>(a.bytes), 30);
    EXPECT_EQ(start.rfind("THE HARBOUR\n\nSCENE 1.", 0), 0u) << start;
    charrnn_text_free(&a);
    charrnn_text_free(&b);
}

TEST(Corpus, ReadErrorsNameThePath)
{
    charrnn_text t;
    charrnn_error err;
    EXPECT_EQ(charrnn_text_read_file("/nonexistent/x.txt", &t, &err), -1);
    EXPECT_STREQ(err.message, "cannot read /nonexistent/x.txt: No such file or directory");
    EXPECT_EQ(charrnn_text_read_file("/", &t, &err), -1);
    EXPECT_STREQ(err.message, "cannot read /: it is a directory");
    TempDir dir;
    write_all(dir.file("t.txt"), std::string("a\0b", 3));
    ASSERT_EQ(charrnn_text_read_file(dir.file("t.txt").c_str(), &t, &err), 0);
    EXPECT_EQ(t.len, 3u); // bytes, NUL included
    charrnn_text_free(&t);
}

// ---- checkpoint -----------------------------------------------------------------------------

struct SmallRun {
    charrnn_checkpoint ck{};
    gpurnn_model *model = nullptr;

    SmallRun()
    {
        std::string text = "abcdefgh\n";
        charrnn_vocab_build(&ck.vocab, bytes_of(text), text.size());
        ck.config.hidden = 6;
        ck.config.cell = GPURNN_CELL_TANH;
        ck.config.layers = 1;
        ck.config.batch = 2;
        ck.config.seq_len = 5;
        ck.config.dtype = GPURNN_F64;
        ck.config.optimizer = GPURNN_ADAM;
        ck.config.learning_rate = 0.01;
        ck.config.clip = 5;
        ck.config.init_scale = 0.1;
        ck.config.val_fraction = 0.05;
        ck.config.seed = 42;
        ck.config.target_steps = 100;
        gpurnn_config cfg;
        gpurnn_config_init(&cfg);
        cfg.vocab_size = ck.vocab.size;
        cfg.hidden_size = 6;
        cfg.batch_size = 2;
        cfg.max_seq_len = 5;
        cfg.dtype = GPURNN_F64;
        cfg.backend = GPURNN_BACKEND_CPU;
        cfg.reduction = GPURNN_LOSS_MEAN;
        cfg.init_scale = 0.1;
        cfg.seed = 42;
        EXPECT_EQ(gpurnn_model_create(&cfg, &model), GPURNN_OK);
        // Two Adam steps, so that there is optimizer and carried state to save.
        int32_t in[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 0}, tg[10] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1};
        gpurnn_optimizer adam{};
        adam.kind = GPURNN_ADAM;
        adam.learning_rate = 0.01;
        for (int i = 0; i < 2; i++) {
            double loss;
            EXPECT_EQ(gpurnn_forward(model, in, tg, 5, &loss), GPURNN_OK);
            EXPECT_EQ(gpurnn_backward(model), GPURNN_OK);
            EXPECT_EQ(gpurnn_step(model, &adam), GPURNN_OK);
            EXPECT_EQ(gpurnn_zero_grad(model), GPURNN_OK);
            charrnn_history_add_train(&ck.history, loss);
        }
        charrnn_history_add_val(&ck.history, 2, 2.5);
        ck.step = 2;
        ck.cursor = {1, 3};
        ck.rng.state = 0x123456789ABCDEF0ULL;
        ck.elapsed_seconds = 12.5;
        ck.smoothed_loss = 0.04;
        ck.smoothing_weight = 0.0396;
        ck.text_len = 999;
        ck.text_hash = 0xFEEDFACECAFEBEEFULL;
        std::snprintf(ck.text_source, sizeof ck.text_source, "%s", "some/text.txt");
    }
    ~SmallRun()
    {
        gpurnn_model_destroy(model);
        charrnn_checkpoint_free(&ck);
    }
};

std::vector<double> params_of(const gpurnn_model *m)
{
    std::vector<double> p(gpurnn_param_count(m));
    EXPECT_EQ(gpurnn_params_get(m, p.data(), p.size()), GPURNN_OK);
    return p;
}

std::vector<double> state_of(const gpurnn_model *m)
{
    std::vector<double> s(gpurnn_state_count(m));
    EXPECT_EQ(gpurnn_state_get(m, s.data(), s.size()), GPURNN_OK);
    return s;
}

TEST(Checkpoint, RoundTripsEverything)
{
    TempDir dir;
    SmallRun run;
    charrnn_error err;
    std::string path = dir.file("run.ckpt");
    ASSERT_EQ(charrnn_checkpoint_save(path.c_str(), &run.ck, run.model, &err), 0) << err.message;

    charrnn_checkpoint back;
    gpurnn_model *model = nullptr;
    ASSERT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), 0)
        << err.message;
    EXPECT_TRUE(charrnn_vocab_equal(&back.vocab, &run.ck.vocab));
    EXPECT_EQ(back.config.hidden, 6);
    EXPECT_EQ(back.config.cell, GPURNN_CELL_TANH);
    EXPECT_EQ(back.config.layers, 1);
    EXPECT_EQ(back.config.batch, 2);
    EXPECT_EQ(back.config.seq_len, 5);
    EXPECT_EQ(back.config.dtype, GPURNN_F64);
    EXPECT_EQ(back.config.optimizer, GPURNN_ADAM);
    EXPECT_EQ(back.config.learning_rate, 0.01);
    EXPECT_EQ(back.config.seed, 42u);
    EXPECT_EQ(back.config.target_steps, 100u);
    EXPECT_EQ(back.step, 2u);
    EXPECT_EQ(back.cursor.epoch, 1u);
    EXPECT_EQ(back.cursor.window, 3u);
    EXPECT_EQ(back.rng.state, 0x123456789ABCDEF0ULL);
    EXPECT_EQ(back.elapsed_seconds, 12.5);
    EXPECT_EQ(back.smoothed_loss, 0.04);
    EXPECT_EQ(back.smoothing_weight, 0.0396);
    EXPECT_EQ(back.text_len, 999u);
    EXPECT_EQ(back.text_hash, 0xFEEDFACECAFEBEEFULL);
    EXPECT_STREQ(back.text_source, "some/text.txt");
    ASSERT_EQ(back.history.train_count, 2u);
    EXPECT_EQ(back.history.train_loss[1], run.ck.history.train_loss[1]);
    ASSERT_EQ(back.history.val_count, 1u);
    EXPECT_EQ(back.history.val_step[0], 2u);
    EXPECT_EQ(back.history.val_loss[0], 2.5);
    // The model: parameters and carried state bit for bit (the optimizer state is checked
    // end to end by the resume test, through the losses that follow).
    EXPECT_EQ(params_of(model), params_of(run.model));
    EXPECT_EQ(state_of(model), state_of(run.model));
    gpurnn_model_destroy(model);
    charrnn_checkpoint_free(&back);

    // No temporary files are left beside it.
    EXPECT_EQ(std::system(("test $(ls '" + dir.file("") + "' | wc -l) -eq 1").c_str()), 0);
}

TEST(Checkpoint, DamageIsDetected)
{
    TempDir dir;
    SmallRun run;
    charrnn_error err;
    std::string path = dir.file("run.ckpt");
    ASSERT_EQ(charrnn_checkpoint_save(path.c_str(), &run.ck, run.model, &err), 0) << err.message;
    std::string good = read_all(path);
    charrnn_checkpoint back;
    gpurnn_model *model = nullptr;

    std::string damaged = good;
    damaged[good.size() / 2] ^= 0x10;
    write_all(path, damaged);
    EXPECT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), -1);
    EXPECT_NE(std::strstr(err.message, "checksum mismatch"), nullptr) << err.message;
    EXPECT_EQ(model, nullptr);

    // The library checks the size before the checksum: a cut file is named as truncated.
    write_all(path, good.substr(0, good.size() - 100));
    EXPECT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), -1);
    EXPECT_NE(std::strstr(err.message, "truncated"), nullptr) << err.message;

    write_all(path, "just some text\n");
    EXPECT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), -1);
    EXPECT_STREQ(err.message, (path + " is not a gpurnn-charrnn checkpoint").c_str());

    // User data of a later version of the program's format (rewritten through the library,
    // so that the checksum is right): named as such.
    {
        gpurnn_model *m = nullptr;
        void *blob = nullptr;
        size_t blob_len = 0;
        ASSERT_EQ(gpurnn_model_load_from_memory(good.data(), good.size(), GPURNN_BACKEND_CPU, &blob, &blob_len, &m),
                  GPURNN_OK);
        std::string later(static_cast<char *>(blob), blob_len);
        ASSERT_EQ(later.substr(0, 8), std::string("CHARRNN\0", 8));
        later[8] = 3; // format version 3
        ASSERT_EQ(gpurnn_model_save_with_user_data(m, later.data(), later.size(), path.c_str()), GPURNN_OK);
        gpurnn_user_data_free(blob);
        gpurnn_model_destroy(m);
    }
    EXPECT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), -1);
    EXPECT_NE(std::strstr(err.message, "format version 3 is not supported (this program reads versions 1 and 2)"),
              nullptr)
        << err.message;
    // Another program's user data.
    ASSERT_EQ(gpurnn_model_save_with_user_data(run.model, "tokenizer", 9, path.c_str()), GPURNN_OK);
    EXPECT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), -1);
    EXPECT_NE(std::strstr(err.message, "user data is not gpurnn-charrnn's"), nullptr) << err.message;

    // A bare library checkpoint is recognised as such.
    ASSERT_EQ(gpurnn_model_save(run.model, path.c_str()), GPURNN_OK);
    EXPECT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), -1);
    EXPECT_NE(std::strstr(err.message, "bare libgpurnn model checkpoint"), nullptr) << err.message;

    EXPECT_EQ(charrnn_checkpoint_load(dir.file("missing").c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), -1);
    EXPECT_NE(std::strstr(err.message, "No such file or directory"), nullptr) << err.message;
}

TEST(Checkpoint, IsALibraryCheckpointWithTheDataAsUserData)
{
    // The file is a plain libgpurnn checkpoint: any libgpurnn program loads the model, and
    // its user data starts with the documented header and vocabulary (README.md).
    TempDir dir;
    SmallRun run;
    charrnn_error err;
    std::string path = dir.file("run.ckpt");
    ASSERT_EQ(charrnn_checkpoint_save(path.c_str(), &run.ck, run.model, &err), 0) << err.message;
    gpurnn_model *m = nullptr;
    void *blob = nullptr;
    size_t len = 0;
    ASSERT_EQ(gpurnn_model_load_with_user_data(path.c_str(), GPURNN_BACKEND_CPU, &blob, &len, &m), GPURNN_OK)
        << gpurnn_last_error();
    EXPECT_EQ(params_of(m), params_of(run.model));
    const unsigned char *b = static_cast<const unsigned char *>(blob);
    ASSERT_GT(len, 16u + 9u);
    EXPECT_EQ(std::memcmp(b, "CHARRNN\0", 8), 0);
    EXPECT_EQ(b[8], 2);  // version 2, little-endian
    EXPECT_EQ(b[12], 1); // parts: vocabulary and training state
    EXPECT_EQ(b[16], 9); // vocab_size
    EXPECT_EQ(std::memcmp(b + 20, "\nabcdefgh", 9), 0);
    gpurnn_user_data_free(blob);
    gpurnn_model_destroy(m);
}

TEST(Checkpoint, LoadsTheEarlierWrapperFormat)
{
    // tests/charrnn/data/legacy-v1.ckpt, written by the program before it used the
    // library's user data (tests/charrnn/data/README.md).
    charrnn_checkpoint ck;
    gpurnn_model *model = nullptr;
    charrnn_error err;
    const std::string path = std::string(CHARRNN_TEST_DATA_DIR) + "/legacy-v1.ckpt";
    ASSERT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &ck, &model, &err), 0) << err.message;
    EXPECT_TRUE(ck.has_training_state);
    EXPECT_EQ(ck.vocab.size, 21);
    EXPECT_EQ(ck.config.hidden, 16);
    EXPECT_EQ(ck.config.batch, 4);
    EXPECT_EQ(ck.config.seq_len, 8);
    EXPECT_EQ(ck.config.dtype, GPURNN_F64);
    EXPECT_EQ(ck.config.optimizer, GPURNN_ADAM);
    EXPECT_EQ(ck.config.learning_rate, 0.03);
    EXPECT_EQ(ck.step, 40u);
    EXPECT_EQ(ck.history.train_count, 40u);
    EXPECT_EQ(ck.text_len, 3024u);
    EXPECT_STREQ(ck.text_source, "text.txt");
    EXPECT_EQ(gpurnn_param_count(model), 2u * 16 * 21 + 16 * 16 + 16 + 21);
    gpurnn_model_destroy(model);
    charrnn_checkpoint_free(&ck);
}

// The user data of run's checkpoint, saved to path, with edit applied, written back through
// the library (so that the checksum is right).
template <class Edit> void rewrite_user_data(const std::string &path, const SmallRun &run, Edit edit)
{
    charrnn_error err;
    ASSERT_EQ(charrnn_checkpoint_save(path.c_str(), &run.ck, run.model, &err), 0) << err.message;
    gpurnn_model *m = nullptr;
    void *blob = nullptr;
    size_t len = 0;
    ASSERT_EQ(gpurnn_model_load_with_user_data(path.c_str(), GPURNN_BACKEND_CPU, &blob, &len, &m), GPURNN_OK);
    std::string data(static_cast<char *>(blob), len);
    gpurnn_user_data_free(blob);
    edit(data);
    ASSERT_EQ(gpurnn_model_save_with_user_data(m, data.data(), data.size(), path.c_str()), GPURNN_OK);
    gpurnn_model_destroy(m);
}

void put_u32_at(std::string &data, size_t offset, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        data[offset + i] = (char)(v >> (8 * i));
}

TEST(Checkpoint, CellAndLayersAreCheckedAgainstTheModel)
{
    TempDir dir;
    SmallRun run;
    charrnn_error err;
    charrnn_checkpoint back;
    gpurnn_model *model = nullptr;
    std::string path = dir.file("run.ckpt");
    // The training state starts after the 20-byte header and the 9 characters; the cell
    // and the layers follow hidden, batch, seq_len, dtype and optimizer.
    const size_t cell_at = 20 + 9 + 5 * 4, layers_at = cell_at + 4;
    struct Case {
        size_t offset;
        uint32_t value;
        const char *message;
    } cases[] = {
        {cell_at, GPURNN_CELL_GRU, "damaged checkpoint (the model does not match its settings)"},
        {cell_at, 4, "damaged checkpoint (bad settings)"},
        {layers_at, 2, "damaged checkpoint (the model does not match its settings)"},
        {layers_at, 0, "damaged checkpoint (bad settings)"},
        {layers_at, GPURNN_MAX_LAYERS + 1, "damaged checkpoint (bad settings)"},
    };
    for (const Case &c : cases) {
        rewrite_user_data(path, run, [&](std::string &data) {
            ASSERT_EQ(data[c.offset], 0 + (c.offset == layers_at)); // tanh (0), 1 layer
            put_u32_at(data, c.offset, c.value);
        });
        EXPECT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), -1)
            << c.offset << " " << c.value;
        EXPECT_EQ(std::string(err.message), path + ": " + c.message);
        EXPECT_EQ(model, nullptr);
    }
}

TEST(Checkpoint, VersionOneUserDataIsOneTanhLayer)
{
    // The same file as version 1 wrote it: no cell or layers fields.
    TempDir dir;
    SmallRun run;
    charrnn_error err;
    std::string path = dir.file("run.ckpt");
    const size_t cell_at = 20 + 9 + 5 * 4;
    rewrite_user_data(path, run, [&](std::string &data) {
        data[8] = 1;
        data.erase(cell_at, 8);
    });
    charrnn_checkpoint back;
    gpurnn_model *model = nullptr;
    ASSERT_EQ(charrnn_checkpoint_load(path.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), 0) << err.message;
    EXPECT_EQ(back.config.cell, GPURNN_CELL_TANH);
    EXPECT_EQ(back.config.layers, 1);
    EXPECT_EQ(back.config.hidden, 6);
    EXPECT_EQ(back.config.learning_rate, 0.01); // the fields after it are where they were
    EXPECT_EQ(back.step, 2u);
    EXPECT_STREQ(back.text_source, "some/text.txt");
    gpurnn_model_destroy(model);
    charrnn_checkpoint_free(&back);

    // A version-1 file as the program wrote it before cells existed (data/README.md).
    const std::string old = std::string(CHARRNN_TEST_DATA_DIR) + "/user-data-v1.ckpt";
    ASSERT_EQ(charrnn_checkpoint_load(old.c_str(), GPURNN_BACKEND_CPU, &back, &model, &err), 0) << err.message;
    EXPECT_EQ(back.config.cell, GPURNN_CELL_TANH);
    EXPECT_EQ(back.config.layers, 1);
    EXPECT_EQ(back.config.hidden, 16);
    EXPECT_EQ(back.config.batch, 4);
    EXPECT_EQ(back.config.learning_rate, 0.03);
    EXPECT_EQ(back.step, 40u);
    EXPECT_STREQ(back.text_source, "text.txt");
    gpurnn_model_destroy(model);
    charrnn_checkpoint_free(&back);
}

TEST(Checkpoint, FailedSaveLeavesTheOldFile)
{
    SmallRun run;
    charrnn_error err;
    EXPECT_EQ(charrnn_checkpoint_save("/nonexistent-dir/run.ckpt", &run.ck, run.model, &err), -1);
    EXPECT_NE(std::strstr(err.message, "/nonexistent-dir/run.ckpt"), nullptr) << err.message;
}

// ---- sampling -------------------------------------------------------------------------------

TEST(Generate, SameSeedSameTextAndPrimeErrors)
{
    SmallRun run;
    charrnn_sampler sampler;
    charrnn_error err;
    ASSERT_EQ(charrnn_sampler_create(&sampler, run.model, &err), 0) << err.message;
    std::string prime = "abcdefgh\nabc"; // longer than seq_len: read in pieces
    std::vector<unsigned char> a(200), b(200), c(200);
    ASSERT_EQ(charrnn_generate(&sampler, &run.ck.vocab, bytes_of(prime), prime.size(), 200, 1.0, 7,
                               a.data(), &err), 0) << err.message;
    ASSERT_EQ(charrnn_generate(&sampler, &run.ck.vocab, bytes_of(prime), prime.size(), 200, 1.0, 7,
                               b.data(), &err), 0);
    ASSERT_EQ(charrnn_generate(&sampler, &run.ck.vocab, bytes_of(prime), prime.size(), 200, 1.0, 8,
                               c.data(), &err), 0);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    for (unsigned char ch : a)
        EXPECT_GE(run.ck.vocab.id_of[ch], 0);
    std::string bad = "abXc";
    EXPECT_EQ(charrnn_generate(&sampler, &run.ck.vocab, bytes_of(bad), bad.size(), 10, 1.0, 7,
                               a.data(), &err), -1);
    EXPECT_NE(std::strstr(err.message, "'X'"), nullptr) << err.message;
    EXPECT_EQ(charrnn_default_prime(&run.ck.vocab), '\n');
    charrnn_sampler_destroy(&sampler);
}

// ---- plot -----------------------------------------------------------------------------------

TEST(Plot, WritesAnSvgWithBothCurves)
{
    TempDir dir;
    charrnn_history h{};
    for (int i = 0; i < 1234; i++)
        charrnn_history_add_train(&h, 4.0 * std::exp(-i / 300.0) + 1.0);
    for (int i = 100; i <= 1200; i += 100)
        charrnn_history_add_val(&h, (uint64_t)i, 4.0 * std::exp(-i / 300.0) + 1.1);
    charrnn_error err;
    std::string path = dir.file("loss.svg");
    ASSERT_EQ(charrnn_plot_losses(path.c_str(), &h, "a <title> & more", &err), 0) << err.message;
    std::string svg = read_all(path);
    EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
    EXPECT_NE(svg.find("</svg>"), std::string::npos);
    EXPECT_NE(svg.find("a &lt;title&gt; &amp; more"), std::string::npos);
    EXPECT_NE(svg.find("training (mean of 3 steps)"), std::string::npos);
    EXPECT_NE(svg.find("validation (last: "), std::string::npos);
    size_t polylines = 0;
    for (size_t at = svg.find("<polyline"); at != std::string::npos; at = svg.find("<polyline", at + 1))
        polylines++;
    EXPECT_EQ(polylines, 2u);
    charrnn_history_free(&h);
    charrnn_history empty{};
    EXPECT_EQ(charrnn_plot_losses(path.c_str(), &empty, "t", &err), -1);
}

TEST(Plot, NiceTicks)
{
    EXPECT_DOUBLE_EQ(charrnn_nice_tick(10, 5), 2);
    EXPECT_DOUBLE_EQ(charrnn_nice_tick(3.2, 6), 0.5);
    EXPECT_DOUBLE_EQ(charrnn_nice_tick(20000, 8), 2000);
}

// ---- model cost ---------------------------------------------------------------------------

double flops_per_token(gpurnn_cell cell, int layers, int V, int H)
{
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.cell = cell;
    cfg.num_layers = layers;
    cfg.vocab_size = V;
    cfg.hidden_size = H;
    return charrnn_training_flops_per_token(&cfg);
}

TEST(Flops, EveryCellAndNumberOfLayers)
{
    // The vanilla count of bench/README.md, 6 (H^2 + V H), for one tanh or ReLU layer.
    EXPECT_EQ(flops_per_token(GPURNN_CELL_TANH, 1, 65, 512), 6.0 * (512 * 512 + 65 * 512));
    EXPECT_EQ(flops_per_token(GPURNN_CELL_RELU, 1, 65, 512), 6.0 * (512 * 512 + 65 * 512));
    EXPECT_EQ(flops_per_token(GPURNN_CELL_TANH, 0, 65, 512), flops_per_token(GPURNN_CELL_TANH, 1, 65, 512));
    // Per token, forward: 33280 (Why) + G * 262144 (W_hh_0) + (L-1) * G * 524288 (W_ih_l and W_hh_l above).
    EXPECT_EQ(flops_per_token(GPURNN_CELL_TANH, 3, 65, 512), 6.0 * (33280 + 262144 + 2 * 524288));
    EXPECT_EQ(flops_per_token(GPURNN_CELL_GRU, 2, 65, 512), 6.0 * (33280 + 3 * 262144 + 3 * 524288));
    EXPECT_EQ(flops_per_token(GPURNN_CELL_LSTM, 1, 65, 512), 6.0 * (33280 + 4 * 262144));
    EXPECT_EQ(flops_per_token(GPURNN_CELL_LSTM, 2, 65, 512), 6.0 * (33280 + 4 * 262144 + 4 * 524288));
}

// ---- options --------------------------------------------------------------------------------

int parse(std::vector<const char *> args, charrnn_options *o, charrnn_error *err)
{
    args.insert(args.begin(), "gpurnn-charrnn");
    return charrnn_parse_options((int)args.size(), const_cast<char **>(args.data()), o, err);
}

TEST(Options, DefaultsAndBothValueForms)
{
    charrnn_options o;
    charrnn_error err;
    ASSERT_EQ(parse({"train"}, &o, &err), 0);
    EXPECT_EQ(o.command, CHARRNN_TRAIN);
    EXPECT_EQ(o.hidden, 256);
    EXPECT_EQ(o.batch, 32);
    EXPECT_EQ(o.seq_len, 64);
    EXPECT_EQ(o.optimizer, GPURNN_ADAM);
    EXPECT_EQ(o.learning_rate, 0.002);
    EXPECT_EQ(o.val_fraction, 0.05);
    EXPECT_EQ(o.text_path, nullptr);
    EXPECT_EQ(o.cell, GPURNN_CELL_TANH);
    EXPECT_EQ(o.layers, 1);
    ASSERT_EQ(parse({"train", "in.txt", "--hidden=64", "--optimizer", "adagrad", "--dtype=f64"}, &o, &err), 0);
    EXPECT_STREQ(o.text_path, "in.txt");
    EXPECT_EQ(o.hidden, 64);
    EXPECT_EQ(o.optimizer, GPURNN_ADAGRAD);
    EXPECT_EQ(o.learning_rate, 0.1); // adagrad's default
    EXPECT_EQ(o.dtype, GPURNN_F64);
    EXPECT_EQ(o.given, (unsigned)(GIVEN_HIDDEN | GIVEN_OPTIMIZER | GIVEN_DTYPE));
    ASSERT_EQ(parse({"sample", "m.ckpt", "--prime", "To be", "--length=20"}, &o, &err), 0);
    EXPECT_STREQ(o.sample_checkpoint, "m.ckpt");
    EXPECT_STREQ(o.prime, "To be");
    EXPECT_EQ(o.length, 20);
}

TEST(Options, CellAndLayers)
{
    charrnn_options o;
    charrnn_error err;
    const struct {
        const char *name;
        gpurnn_cell cell;
    } cells[] = {{"tanh", GPURNN_CELL_TANH}, {"relu", GPURNN_CELL_RELU}, {"gru", GPURNN_CELL_GRU},
                 {"lstm", GPURNN_CELL_LSTM}};
    for (const auto &c : cells) {
        ASSERT_EQ(parse({"train", "--cell", c.name}, &o, &err), 0) << err.message;
        EXPECT_EQ(o.cell, c.cell);
        EXPECT_STREQ(charrnn_cell_name(o.cell), c.name);
        EXPECT_EQ(o.layers, 1);
        EXPECT_EQ(o.given, (unsigned)GIVEN_CELL);
    }
    ASSERT_EQ(parse({"train", "--layers=3", "--cell=lstm"}, &o, &err), 0) << err.message;
    EXPECT_EQ(o.layers, 3);
    EXPECT_EQ(o.cell, GPURNN_CELL_LSTM);
    EXPECT_EQ(o.given, (unsigned)(GIVEN_CELL | GIVEN_LAYERS));
    ASSERT_EQ(parse({"train", "--layers", std::to_string(GPURNN_MAX_LAYERS).c_str()}, &o, &err), 0) << err.message;
    EXPECT_EQ(o.layers, GPURNN_MAX_LAYERS);
    EXPECT_EQ(o.cell, GPURNN_CELL_TANH);
    EXPECT_EQ(o.given, (unsigned)GIVEN_LAYERS);
}

TEST(Options, CellAndLayersInTheBanner)
{
    char line[160];
    charrnn_format_model(line, sizeof line, 65, 512, 2, GPURNN_CELL_GRU, GPURNN_F32, 2483777);
    EXPECT_STREQ(line, "V=65 H=512 L=2 gru f32, 2483777 parameters");
    charrnn_format_model(line, sizeof line, 21, 16, 1, GPURNN_CELL_TANH, GPURNN_F64, 965);
    EXPECT_STREQ(line, "V=21 H=16 L=1 tanh f64, 965 parameters");
    charrnn_format_model(line, sizeof line, 3, 4, 1024, GPURNN_CELL_LSTM, GPURNN_F32, 1);
    EXPECT_STREQ(line, "V=3 H=4 L=1024 lstm f32, 1 parameters");
    charrnn_format_model(line, sizeof line, 3, 4, 1, GPURNN_CELL_RELU, GPURNN_F32, 1);
    EXPECT_STREQ(line, "V=3 H=4 L=1 relu f32, 1 parameters");
}

TEST(Options, BadUsageIsOneClearLine)
{
    charrnn_options o;
    charrnn_error err;
    struct Case {
        std::vector<const char *> args;
        const char *message;
    } cases[] = {
        {{"train", "--hidden", "0"}, "--hidden wants an integer in [1, 16384], got '0'"},
        {{"train", "--lr", "-1"}, "--lr wants a number in [0, 1e+06], got '-1'"},
        {{"train", "--lr", "nan"}, "--lr wants a number in [0, 1e+06], got 'nan'"},
        {{"train", "--backend", "gpu"}, "--backend wants auto, cpu or cuda, got 'gpu'"},
        {{"train", "--nope"}, "unknown option '--nope' for train (see --help)"},
        {{"sample", "x", "--hidden", "3"}, "unknown option '--hidden' for sample (see --help)"},
        {{"train", "--seed"}, "--seed needs a value (see --help)"},
        {{"train", "--seed", "-3"}, "--seed wants a non-negative integer, got '-3'"},
        {{"train", "a", "b"}, "unexpected extra operand 'b' (see --help)"},
        {{"sample"}, "sample needs a CHECKPOINT (see --help)"},
        {{"train", "--steps", "3", "--epochs", "1"}, "give --steps or --epochs, not both"},
        {{"train", "--compare-speed=1"}, "--compare-speed takes no value"},
        {{"fly"}, "unknown command 'fly': use `train` or `sample` (see --help)"},
        {{"train", "--cell", "rnn"}, "--cell wants tanh, relu, gru or lstm, got 'rnn'"},
        {{"train", "--cell=GRU"}, "--cell wants tanh, relu, gru or lstm, got 'GRU'"},
        {{"train", "--cell"}, "--cell needs a value (see --help)"},
        {{"train", "--layers", "0"}, "--layers wants an integer in [1, 1024], got '0'"},
        {{"train", "--layers", "-2"}, "--layers wants an integer in [1, 1024], got '-2'"},
        {{"train", "--layers", "1025"}, "--layers wants an integer in [1, 1024], got '1025'"},
        {{"train", "--layers", "two"}, "--layers wants an integer in [1, 1024], got 'two'"},
        {{"train", "--layers=1.5"}, "--layers wants an integer in [1, 1024], got '1.5'"},
        {{"sample", "x", "--cell", "gru"}, "unknown option '--cell' for sample (see --help)"},
        {{"sample", "x", "--layers", "2"}, "unknown option '--layers' for sample (see --help)"},
    };
    for (const Case &c : cases) {
        EXPECT_EQ(parse(c.args, &o, &err), -1) << c.message;
        EXPECT_STREQ(err.message, c.message);
    }
    ASSERT_EQ(parse({"train", "--bogus", "--help"}, &o, &err), 0); // --help wins
    EXPECT_EQ(o.command, CHARRNN_HELP);
}

} // namespace
