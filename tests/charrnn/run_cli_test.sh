#!/usr/bin/env bash
# End-to-end tests of gpurnn-charrnn, run by ctest (see CMakeLists.txt beside this file):
#
#   run_cli_test.sh STEP PROGRAM WORKDIR [WRITER DATADIR]
#
#   help     --help exits 0 and documents every option with its default
#   errors   each bad input gives one line on stderr and a non-zero exit, never a crash
#   resume   CPU float64: a run stopped at step k (at an epoch boundary, and mid-epoch)
#            and resumed reaches the same losses, bit for bit, as an uninterrupted run
#   sigint   Ctrl-C during training: exit 0, a line saying where the checkpoint is, the
#            checkpoint samples and resumes exactly
#   sample   the same seed gives the same text, another seed other text; --prime is kept
#   builtin  no FILE: trains on the built-in corpus; --plot writes an SVG (rendered when
#            rsvg-convert is installed); --compare-speed ends with the speed line
#   foreign  a checkpoint written by another program (WRITER: the libgpurnn API and the
#            user data of README.md, no gpurnn-charrnn code) samples; it does not resume
#   legacy   DATADIR/legacy-v1.ckpt, of the earlier wrapper format, samples what that
#            version printed and resumes (into a checkpoint of the current format);
#            DATADIR/user-data-v1.ckpt, of user data version 1 (before --cell and
#            --layers), samples the same and resumes as one tanh layer
#   cells    --cell gru --layers 2 and --cell lstm: the banner names them with the
#            parameter count of their layout, a stopped run resumes to the same losses bit
#            for bit, --resume refuses another --cell or --layers, the checkpoint samples
#
# Texts are small and generated here. Exit status: 0 passed, 77 skipped, else failed.
set -euo pipefail

step=$1
program=$2
work=$3
writer=${4:-}
data=${5:-}
rm -rf "$work"
mkdir -p "$work"
cd "$work"

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# A deterministic text of about $1 bytes: sentences from a few words, no randomness
# needed, so every machine makes the same file.
make_text() {
    awk -v size="$1" 'BEGIN {
        split("the a my old red blue small", adj, " ");
        split("cat dog bird ship tree house river", noun, " ");
        split("sees finds likes keeps wants", verb, " ");
        n = 0; i = 0;
        while (n < size) {
            s = adj[i % 7 + 1] " " noun[(i * 3) % 7 + 1] " " verb[(i * 5) % 5 + 1] " " \
                adj[(i * 2) % 7 + 1] " " noun[(i * 4 + 1) % 7 + 1] ".";
            if (i % 4 == 3) s = s "\n"; else s = s " ";
            printf "%s", s; n += length(s); i++;
        }
    }'
}

# Runs the program expecting failure: exit status 1 or 2 (not a signal), exactly one line
# on stderr that contains the expected text.
expect_error() {
    local expected=$1
    shift
    local rc=0
    "$program" "$@" >stdout.txt 2>stderr.txt || rc=$?
    if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then
        cat stderr.txt >&2
        fail "'$*' exited with $rc, not 1 or 2"
    fi
    if [ "$(wc -l <stderr.txt)" -ne 1 ]; then
        cat stderr.txt >&2
        fail "'$*' did not print exactly one line on stderr"
    fi
    if ! grep -qF -- "$expected" stderr.txt; then
        fail "'$*' said '$(cat stderr.txt)', expected it to contain '$expected'"
    fi
    echo "ok ($rc): $* -> $(cat stderr.txt)"
}

# The step and training-loss columns of a --log CSV.
losses() {
    cut -d, -f1,3 "$1" | tail -n +2
}

# A tiny float64 CPU model trains at thousands of steps per second.
tiny=(--hidden 24 --batch 8 --seq-len 16 --dtype f64 --backend cpu --sample-length 0)

case $step in
help)
    "$program" --help >help.txt
    for option in --hidden --cell --layers --batch --seq-len --steps --epochs --time-limit --optimizer --lr --lr-final \
        --momentum --clip --init-scale --dtype --backend --seed --val-fraction --eval-every \
        --sample-every --sample-length --temperature --checkpoint --every --resume --log \
        --plot --compare-speed --prime --length; do
        grep -qE -- "^  $option( |$)" help.txt || fail "--help does not document $option"
    done
    for default in "[256]" "[tanh]" "[32]" "[64]" "[2000]" "[adam]" "[5]" "[f32]" "[auto]" "[0.05]" \
        "[0.8]" "[charrnn.ckpt" "[500]" "[200]"; do
        grep -qF -- "$default" help.txt || fail "--help does not show the default $default"
    done
    "$program" train --help | cmp -s - help.txt || fail "train --help differs from --help"
    "$program" --version | grep -q "libgpurnn" || fail "--version does not name the library"
    echo "--help documents every option and its default"
    ;;
errors)
    make_text 3000 >text.txt
    printf 'too short\n' >short.txt
    # Bad usage: exit status 2.
    expect_error "unknown option '--bogus'" train --bogus
    expect_error "--hidden wants an integer" train --hidden 0
    expect_error "--optimizer wants sgd, adagrad or adam, got 'rmsprop'" train --optimizer rmsprop
    expect_error "--cell wants tanh, relu, gru or lstm, got 'rnn'" train --cell rnn
    expect_error "--layers wants an integer in [1, 1024], got '0'" train --layers 0
    expect_error "--layers wants an integer in [1, 1024], got '1025'" train --layers 1025
    expect_error "unknown option '--cell' for sample" sample x.ckpt --cell gru
    expect_error "--temperature wants a number" sample x.ckpt --temperature -1
    expect_error "unknown command 'fit'" fit
    expect_error "sample needs a CHECKPOINT" sample
    # Unreadable files.
    expect_error "cannot read $work/missing.txt: No such file or directory" train "$work/missing.txt"
    expect_error "cannot read $work: it is a directory" train "$work"
    # Too short for one window, and for the streams.
    expect_error "the text has 10 bytes; --batch 32 streams of --seq-len 16 characters, with --val-fraction 0.05 of it held out, need at least 539" train short.txt --seq-len 16
    expect_error "streams of --seq-len 64 characters, with --val-fraction 0.05 of it held out, need at least" train text.txt --batch 64
    # A checkpoint from another vocabulary.
    "$program" train text.txt "${tiny[@]}" --steps 3 --checkpoint words.ckpt >/dev/null
    printf 'QUITE DIFFERENT CHARACTERS, ALL IN CAPITALS! %.0s' $(seq 40) >capitals.txt
    expect_error "words.ckpt was trained on another vocabulary" train capitals.txt --resume words.ckpt
    # Sampling: prime characters outside the vocabulary are named; bad checkpoints.
    expect_error "the prime text has characters that are not in the model's vocabulary: 'Q', 'Z'" \
        sample words.ckpt --prime "the Quiet Zoo"
    expect_error "cannot read missing.ckpt: No such file or directory" sample missing.ckpt
    expect_error "text.txt is not a gpurnn-charrnn checkpoint" sample text.txt
    head -c 2000 words.ckpt >truncated.ckpt
    expect_error "truncated" sample truncated.ckpt
    # A resumed run keeps its settings.
    expect_error "--hidden 32 differs from words.ckpt's 24" train text.txt --resume words.ckpt --hidden 32
    expect_error "--cell gru differs from words.ckpt's tanh (a resumed run keeps its settings; leave --cell out)" \
        train text.txt --resume words.ckpt --cell gru --steps 5
    expect_error "--layers 2 differs from words.ckpt's 1 (a resumed run keeps its settings; leave --layers out)" \
        train text.txt --resume words.ckpt --layers 2 --steps 5
    expect_error "words.ckpt is already at step 3" train text.txt --resume words.ckpt --steps 2
    # An explicit backend that cannot be used here is an error, not a crash.
    if ! "$program" train text.txt "${tiny[@]/cpu/cuda}" --steps 1 --checkpoint cuda.ckpt \
        >/dev/null 2>cuda.txt; then
        expect_error "cannot create the model" train text.txt "${tiny[@]/cpu/cuda}" --steps 1
    fi
    ;;
resume)
    make_text 3000 >text.txt
    # 8 streams of (2850 - 1) / 8 = 356 characters: 22 windows of 16 an epoch.
    "$program" train text.txt "${tiny[@]}" --steps 60 --checkpoint full.ckpt --log full.csv \
        >full.out
    grep -q "22 steps an epoch" full.out || fail "unexpected epoch length: $(cat full.out)"
    # The banner: one tanh layer by default, with the vanilla count 2HV + H^2 + H + V.
    V=$(sed -nE 's/^text: .*, ([0-9]+) distinct;.*/\1/p' full.out)
    banner="model: V=$V H=24 L=1 tanh f64, $((2 * 24 * V + 24 * 24 + 24 + V)) parameters; B=8 streams"
    grep -qF "$banner" full.out || fail "no '$banner' in: $(cat full.out)"
    # Stopped at step 22 (an epoch boundary), resumed to 41 (mid-epoch), then to 60.
    "$program" train text.txt "${tiny[@]}" --steps 22 --checkpoint part.ckpt --log part.csv >/dev/null
    "$program" train --resume part.ckpt --steps 41 --backend cpu --sample-length 0 --log part.csv \
        >/dev/null
    "$program" train --resume part.ckpt --steps 60 --backend cpu --sample-length 0 --log part.csv \
        >resumed.out
    grep -q "resuming part.ckpt at step 41" resumed.out || fail "no resume line: $(cat resumed.out)"
    losses full.csv >full.losses
    losses part.csv >part.losses
    [ "$(wc -l <full.losses)" -eq 60 ] || fail "the uninterrupted run logged $(wc -l <full.losses) steps"
    diff full.losses part.losses >&2 || fail "the resumed run's losses differ from the uninterrupted run's"
    # The checkpoints at step 60 hold the same model: they sample the same text.
    "$program" sample full.ckpt --seed 5 --length 300 >full.sample
    "$program" sample part.ckpt --seed 5 --length 300 >part.sample
    cmp full.sample part.sample || fail "the two runs' final models sample differently"
    echo "stopped at 22 and 41, resumed to 60: the same 60 losses, bit for bit"
    ;;
sigint)
    make_text 3000 >text.txt
    # Job control: without it bash starts background commands with SIGINT ignored, and
    # the program (rightly) leaves an ignored SIGINT ignored.
    set -m
    log=run.csv
    "$program" train text.txt "${tiny[@]}" --steps 100000000 --checkpoint run.ckpt --log $log \
        --every 0 >run.out 2>run.err &
    pid=$!
    # Wait until it is training (its log has rows), then interrupt it.
    for _ in $(seq 200); do
        [ -s $log ] && [ "$(wc -l <$log)" -gt 20 ] && break
        sleep 0.05
    done
    kill -INT $pid
    rc=0
    wait $pid || rc=$?
    [ $rc -eq 0 ] || { cat run.err >&2; fail "after SIGINT the program exited with $rc, not 0"; }
    line=$(grep "^interrupted at step" run.out) || fail "no 'interrupted at step' line: $(tail -3 run.out)"
    echo "$line"
    echo "$line" | grep -qF "checkpoint saved to run.ckpt" || fail "the line does not say where the checkpoint is"
    k=$(echo "$line" | sed -E 's/^interrupted at step ([0-9]+) .*/\1/')
    [ "$(losses $log | wc -l)" -eq "$k" ] || fail "the log has $(losses $log | wc -l) steps, the line says $k"
    "$program" sample run.ckpt --length 50 >/dev/null || fail "the saved checkpoint does not load"
    # It resumes exactly where it stopped.
    target=$((k + 15))
    "$program" train --resume run.ckpt --steps $target --backend cpu --sample-length 0 --log $log >/dev/null
    "$program" train text.txt "${tiny[@]}" --steps $target --checkpoint straight.ckpt \
        --log straight.csv >/dev/null
    diff <(losses straight.csv) <(losses $log) >&2 || fail "resuming after Ctrl-C changed the losses"
    echo "interrupted at step $k, resumed to $target: the same losses as an uninterrupted run"
    ;;
sample)
    make_text 3000 >text.txt
    "$program" train text.txt "${tiny[@]/f64/f32}" --steps 40 --checkpoint s.ckpt >/dev/null
    "$program" sample s.ckpt --seed 11 --length 400 >a.txt
    "$program" sample s.ckpt --seed 11 --length 400 >b.txt
    "$program" sample s.ckpt --seed 12 --length 400 >c.txt
    cmp a.txt b.txt || fail "the same seed gave different text"
    ! cmp -s a.txt c.txt || fail "seeds 11 and 12 gave the same text"
    [ "$(head -c 400 a.txt | wc -c)" -eq 400 ] || fail "fewer than 400 characters"
    "$program" sample s.ckpt --prime "the red cat" --length 30 --temperature 0 >p1.txt
    "$program" sample s.ckpt --prime "the red cat" --length 30 --temperature 0 --seed 99 >p2.txt
    grep -q "^the red cat" p1.txt || fail "the sample does not start with its prime"
    cmp p1.txt p2.txt || fail "temperature 0 depends on the seed"
    echo "same seed, same text; the prime comes first"
    ;;
builtin)
    "$program" train --hidden 32 --steps 40 --lr 0.01 --sample-length 80 --plot loss.svg \
        --checkpoint builtin.ckpt --compare-speed >out.txt
    cat out.txt
    grep -q "text: the built-in corpus" out.txt || fail "did not train on the built-in corpus"
    grep -q "^checkpoint saved to builtin.ckpt" out.txt || fail "no checkpoint line"
    tail -n 1 out.txt | grep -q "^speed at H=32 L=1 tanh B=32 T=64 f32: CPU .* chars/s" ||
        fail "the last line is not the speed comparison"
    grep -q "</svg>" loss.svg || fail "loss.svg is not a complete SVG"
    if command -v rsvg-convert >/dev/null; then
        rsvg-convert loss.svg -o loss.png || fail "rsvg-convert cannot render loss.svg"
        [ -s loss.png ] || fail "rsvg-convert made an empty PNG"
        echo "loss.svg renders"
    else
        echo "(rsvg-convert not installed: loss.svg checked for completeness only)"
    fi
    ;;
foreign)
    "$writer" abc.ckpt || fail "the writer failed"
    "$program" sample abc.ckpt --prime a --length 11 --temperature 0 >abc.txt
    [ "$(cat abc.txt)" = "abcabcabcabc" ] || fail "sampled '$(cat abc.txt)', expected abcabcabcabc"
    "$program" sample abc.ckpt --length 30 --seed 3 >/dev/null || fail "sampling at temperature 1 failed"
    expect_error "the prime text has characters that are not in the model's vocabulary: 'd'" \
        sample abc.ckpt --prime "abcd"
    printf 'abcabc cab %.0s' $(seq 100) >abc-text.txt
    expect_error "abc.ckpt holds a model and its vocabulary but no training state" \
        train abc-text.txt --resume abc.ckpt
    echo "another program's checkpoint samples 'abcabc...'"
    ;;
legacy)
    cp "$data/legacy-v1.ckpt" legacy.ckpt
    chmod u+w legacy.ckpt
    "$program" sample legacy.ckpt --prime "the " --length 60 --temperature 0 >legacy.sample
    cmp legacy.sample "$data/legacy-v1.sample" || fail "the old checkpoint samples other text than before"
    # Resumed from step 40 to 50 on the same text: the losses follow those of a run that was
    # never stopped (up to the last bits, since the old file may come from another build of
    # the CPU backend), and the new checkpoint is a libgpurnn one that samples.
    make_text 3000 >text.txt
    "$program" train text.txt --resume legacy.ckpt --steps 50 --backend cpu --sample-length 0 \
        --log resumed.csv --checkpoint new.ckpt >resumed.out
    grep -q "resuming legacy.ckpt at step 40" resumed.out || fail "no resume line: $(cat resumed.out)"
    "$program" train text.txt --hidden 16 --batch 4 --seq-len 8 --dtype f64 --backend cpu \
        --sample-length 0 --lr 0.03 --steps 50 --checkpoint straight.ckpt --log straight.csv >/dev/null
    losses resumed.csv >resumed.losses
    losses straight.csv | tail -n 10 >straight.losses
    [ "$(wc -l <resumed.losses)" -eq 10 ] || fail "the resumed run logged $(wc -l <resumed.losses) steps"
    paste -d, resumed.losses straight.losses | awk -F, '
        $1 != $3 || ($2 - $4) > 1e-9 * $4 || ($4 - $2) > 1e-9 * $4 { bad = 1; print "step " $1 ": " $2 " vs " $4 }
        END { exit bad }' >&2 || fail "the resumed run's losses differ from an uninterrupted run's"
    [ "$(head -c 8 new.ckpt | od -An -tx1 | tr -d ' \n')" = "89475055524e4e0a" ] ||
        fail "new.ckpt is not a libgpurnn checkpoint"
    "$program" sample new.ckpt --length 50 >/dev/null || fail "the resumed checkpoint does not sample"
    # User data version 1, the same run saved in the library's checkpoint by the program
    # before --cell and --layers: it samples the same, and resumes as one tanh layer.
    cp "$data/user-data-v1.ckpt" v1.ckpt
    chmod u+w v1.ckpt
    "$program" sample v1.ckpt --prime "the " --length 60 --temperature 0 >v1.sample
    cmp v1.sample "$data/legacy-v1.sample" || fail "the version-1 user data samples other text than before"
    "$program" train text.txt --resume v1.ckpt --steps 45 --backend cpu --sample-length 0 \
        --cell tanh --layers 1 >v1.out
    grep -q "model: V=21 H=16 L=1 tanh f64, 965 parameters" v1.out || fail "no tanh banner: $(cat v1.out)"
    expect_error "--cell lstm differs from v1.ckpt's tanh" train text.txt --resume v1.ckpt --cell lstm --steps 50
    echo "the earlier formats sample as before and resume"
    ;;
cells)
    make_text 3000 >text.txt
    # Parameters of L layers of G gates (W_ih_0 (GH, V), W_hh (GH, H), W_ih above (GH, H),
    # b_ih and b_hh (GH) each), Why (V, H), by (V): PyTorch's count, not the library's.
    gated_params() { # G L H V
        echo $(($1 * $3 * $4 + $1 * $3 * $3 + ($2 - 1) * 2 * $1 * $3 * $3 + $2 * 2 * $1 * $3 + $4 * $3 + $4))
    }
    for model in "gru 2 3" "lstm 1 4"; do
        set -- $model
        cell=$1 L=$2 G=$3
        run=("${tiny[@]}" --cell $cell --layers $L)
        "$program" train text.txt "${run[@]}" --steps 30 --checkpoint $cell-full.ckpt --log $cell-full.csv \
            >$cell-full.out 2>$cell-full.err || fail "--cell $cell --layers $L: $(cat $cell-full.err)"
        V=$(sed -nE 's/^text: .*, ([0-9]+) distinct;.*/\1/p' $cell-full.out)
        banner="model: V=$V H=24 L=$L $cell f64, $(gated_params $G $L 24 $V) parameters"
        grep -qF "$banner" $cell-full.out || fail "no '$banner' in: $(cat $cell-full.out)"
        # Stopped at 13 (mid-epoch), resumed to 30: the uninterrupted run's losses.
        "$program" train text.txt "${run[@]}" --steps 13 --checkpoint $cell.ckpt --log $cell.csv >/dev/null
        "$program" train --resume $cell.ckpt --steps 30 --backend cpu --sample-length 0 --log $cell.csv \
            --cell $cell --layers $L >$cell-resumed.out
        grep -q "resuming $cell.ckpt at step 13" $cell-resumed.out || fail "no resume line: $(cat $cell-resumed.out)"
        grep -qF "$banner" $cell-resumed.out || fail "the resumed run shows another model: $(cat $cell-resumed.out)"
        diff <(losses $cell-full.csv) <(losses $cell.csv) >&2 || fail "--cell $cell: resuming changed the losses"
        other=tanh
        [ $L -eq 1 ] && other_layers=2 || other_layers=1
        expect_error "--cell $other differs from $cell.ckpt's $cell" train --resume $cell.ckpt --cell $other --steps 40
        expect_error "--layers $other_layers differs from $cell.ckpt's $L" \
            train --resume $cell.ckpt --layers $other_layers --steps 40
        "$program" sample $cell.ckpt --seed 5 --length 200 >$cell-a.sample
        "$program" sample $cell-full.ckpt --seed 5 --length 200 >$cell-b.sample
        cmp $cell-a.sample $cell-b.sample || fail "--cell $cell: the two runs' final models sample differently"
        echo "--cell $cell --layers $L: $banner; stopped at 13, resumed to 30 with the same losses"
    done
    ;;
*)
    fail "unknown step '$step'"
    ;;
esac
echo "charrnn.cli.$step: passed"
