"""Zero-shot scoring: the four heuristics against hand-computed scores, batching, bad input, the
``gptkit zeroshot`` verb on a tiny checkpoint, and the curve callback during a fit.

Most scorer tests use a model whose language model ignores its input: the last block's LayerNorm has
gain 0 and bias ``(1, 0, ..., 0)``, so every hidden state is that vector and the next-token logits are
column 0 of the (tied) token embedding, which is 0 but for the preferred words. Every log-probability
is then known in closed form: ``log p(w) = bonus(w) - log(sum_v exp(bonus(v)))``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import QUICK, REPO, run_cli
from finetune_helpers import ROOTS, tiny_tokenizer
from fit_helpers import N_STEPS, Record, fit, scalars, tiny_args

from gptkit import zeroshot as zs
from gptkit.cli import main
from gptkit.config import load_config
from gptkit.errors import ConfigError, DataError
from gptkit.model import GPT, GPTConfig
from gptkit.tasks import get_task
from gptkit.tasks.base import Example


def preferring(tokenizer, bonus: dict[str, float], n_ctx: int = 64) -> GPT:
    """A tiny GPT whose next-token logits after any text are ``bonus[word]`` for those words' tokens, 0 for
    every other token (see the module docstring)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_ctx=n_ctx, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        ln = model.blocks[-1].ln_2
        ln.weight.zero_()
        ln.bias.zero_()
        ln.bias[0] = 1.0
        model.tokens_embed.weight[:, 0] = 0.0
        for word, value in bonus.items():
            (token,) = tokenizer.encode(word)
            model.tokens_embed.weight[token, 0] = value
    return model


def log_z(tokenizer, bonus: dict[str, float]) -> float:
    """``log sum_v exp(logit_v)`` of :func:`preferring`'s model."""
    return math.log(tokenizer.vocab_size - len(bonus) + sum(math.exp(b) for b in bonus.values()))


def settings(*overrides: str):
    return load_config(None, list(overrides)).zeroshot


# -- the heuristics, by hand -------------------------------------------------------------------------
def test_verbaliser_follows_the_preferred_word_and_flips_with_it():
    tok = tiny_tokenizer()
    task = get_task("polarity")
    h = zs.Verbaliser(task, tok, 64, settings("zeroshot.verbalisers.polarity=[the,a]"))
    examples = [Example("a fine story", label=1), Example("it is dull", label=0), Example("boring", label=0)]
    inputs = h.encode(examples)
    assert inputs.sequences[1] == tok.encode("it is dull") + tok.encode("very")  # the paper's prompt
    assert h.ids == [tok.encode("the")[0], tok.encode("a")[0]]  # negative, positive

    z = log_z(tok, {"a": 10.0})
    scores = h.scores(preferring(tok, {"a": 10.0}), inputs, batch_size=2)
    assert torch.allclose(scores, torch.tensor([[-z, 10 - z]] * 3), atol=1e-4)
    scored = zs.ZeroshotTask(task, h, [("dev", inputs)])
    assert scored.score(preferring(tok, {"a": 10.0}), 2) == {"zeroshot/polarity/acc": pytest.approx(1 / 3)}
    # the preference flips: so does every prediction
    assert h.predict(h.scores(preferring(tok, {"the": 10.0}), inputs, 2), None).tolist() == [0, 0, 0]
    assert scored.score(preferring(tok, {"the": 10.0}), 2) == {"zeroshot/polarity/acc": pytest.approx(2 / 3)}


def test_acceptability_is_the_average_token_log_probability_against_a_threshold_chosen_on_train():
    tok = tiny_tokenizer()
    task = get_task("cola")
    h = zs.Acceptability(task, tok, 64, settings())
    examples = [Example("the the the", label=1), Example("a a a", label=0), Example("the a a", label=0)]
    inputs = h.encode(examples)
    z = log_z(tok, {"the": 10.0})
    # the first token has no context: tokens 2.. are scored
    expected = torch.tensor([10 - z, -z, -z])
    assert torch.allclose(h.scores(preferring(tok, {"the": 10.0}), inputs, 3), expected, atol=1e-4)
    assert h.predict(expected, 5 - z).tolist() == [1, 0, 0]
    flipped = h.scores(preferring(tok, {"a": 10.0}), inputs, 3)
    assert torch.allclose(flipped, torch.tensor([-z, 10 - z, 10 - z]), atol=1e-4)
    assert h.predict(flipped, 5 - z).tolist() == [0, 1, 1]

    scored = zs.ZeroshotTask(task, h, [("dev", inputs)], train=inputs)
    metrics = scored.score(preferring(tok, {"the": 10.0}), 3)
    assert metrics["zeroshot/cola/threshold"] == pytest.approx(5 - z, abs=1e-4)  # midway, and reported
    assert metrics["zeroshot/cola/mcc"] == pytest.approx(1.0)


def test_the_threshold_maximises_the_tasks_first_metric():
    scores = torch.tensor([0.4, 0.1, 0.3, 0.2])
    labels = torch.tensor([1, 0, 1, 0])
    threshold, mcc = zs.choose_threshold(scores, labels, get_task("cola").metrics)  # CoLA: MCC first
    assert threshold == pytest.approx(0.25) and mcc == pytest.approx(1.0)
    threshold, acc = zs.choose_threshold(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([1, 1, 0]),
                                         get_task("wnli").metrics)
    assert acc == pytest.approx(2 / 3) and threshold < 0.1  # everything above it: label 1


def test_multiple_choice_picks_the_answer_with_the_highest_average_log_probability():
    tok = tiny_tokenizer()
    task = get_task("race")
    h = zs.MultipleChoice(task, tok, 64, settings())
    examples = [Example("a a", "is it", ("the the", "a"), label=0),
                Example("it is", None, ("a", "a the", "the"), label=2)]
    inputs = h.encode(examples)
    context = tok.encode("a a") + tok.encode("is it")
    assert inputs.sequences[0] == context + tok.encode("the the") and inputs.starts[0] == len(context)
    assert inputs.owners == [0, 0, 1, 1, 1] and inputs.slots == [0, 1, 0, 1, 2]

    z = log_z(tok, {"the": 10.0})
    scores = h.scores(preferring(tok, {"the": 10.0}), inputs, 4)
    inf = -math.inf
    assert torch.allclose(scores, torch.tensor([[10 - z, -z, inf], [-z, 5 - z, 10 - z]]), atol=1e-4)
    assert h.predict(scores, None).tolist() == [0, 2]
    assert h.predict(h.scores(preferring(tok, {"a": 10.0}), inputs, 4), None).tolist() == [1, 0]
    # a long context keeps its end (nearest the answer); the answer keeps its start
    short = zs.MultipleChoice(task, tok, 8, settings()).encode([Example("a " * 20, None, ("the " * 9,), label=0)])
    assert short.sequences == [tok.encode("a") * 4 + tok.encode("the") * 4] and short.truncated == 1


@pytest.mark.parametrize("premise, hypothesis, found", [
    ("The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.",
     zs.Substitution("The drain is clogged with hair.", "It", "The hair", "has to be cleaned.", "has to be cleaned.")),
    # the hypothesis repeats the words before the pronoun: they are not the candidate
    ("But a new study argues that that's exactly how it makes us feel.", "That's exactly how Facebook makes us feel.",
     zs.Substitution("But a new study argues that that's exactly how", "it", "Facebook", "makes us feel.",
                     "makes us feel.")),
    # the pronoun is the last word: nothing after it to score
    ("There is a pillar between me and the stage, and I can't see around it.", "I can't see around the pillar.", None),
])
def test_a_wnli_pair_gives_its_substitution(premise, hypothesis, found):
    assert zs.locate_substitution(premise, hypothesis) == found


def test_winograd_scores_the_rest_after_the_candidate_against_after_the_pronoun():
    tok = tiny_tokenizer()
    task = get_task("wnli")
    h = zs.Winograd(task, tok, 64, settings())
    examples = [Example("The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.", label=0),
                Example("I can't see around it.", "I can't see the pillar.", label=1)]
    inputs = h.encode(examples)
    before, rest = tok.encode("The drain is clogged with hair."), tok.encode("has to be cleaned.")
    candidate, pronoun = tok.encode("The hair"), tok.encode("It")
    assert inputs.sequences == [before + candidate + rest, before + pronoun + rest]
    assert inputs.starts == [len(before) + len(candidate), len(before) + len(pronoun)]
    assert inputs.unlocated == 1  # the second pair gives no substitution: it scores 0

    # a language model that ignores the context cannot tell the candidate from the pronoun
    assert h.scores(preferring(tok, {"the": 10.0}), inputs, 2).tolist() == [0.0, 0.0]
    # a real one: the difference of the two average log-probabilities of the rest, computed one by one
    torch.manual_seed(3)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_ctx=64, n_layer=2, n_head=2, n_embd=32)).eval()
    expected = [reference_mean(model, s, start) for s, start in zip(inputs.sequences, inputs.starts)]
    assert h.scores(model, inputs, 2).tolist() == pytest.approx([expected[0] - expected[1], 0.0], abs=1e-5)

    with pytest.raises(DataError, match="none of its 1 examples gives a Winograd substitution"):
        h.encode(examples[1:])


def reference_mean(model: GPT, sequence: list[int], start: int) -> float:
    """The average log-probability of ``sequence[start:]``, from one unpadded forward pass."""
    with torch.no_grad():
        logits = model.lm_logits(model(torch.tensor([sequence])))[0]
    logp = torch.log_softmax(logits.float(), -1)
    return float(torch.stack([logp[t - 1, sequence[t]] for t in range(start, len(sequence))]).mean())


# -- batching ---------------------------------------------------------------------------------------
def test_a_batch_of_one_gives_the_scores_of_a_batch_of_many():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, n_ctx=48, n_layer=2, n_head=2, n_embd=32)).eval()
    lengths = [3, 48, 17, 5, 30, 2, 17, 41, 9]
    sequences = [torch.randint(0, 300, (n,)).tolist() for n in lengths]
    starts = [1, 10, 16, 4, 1, 1, 3, 40, 8]
    expected = torch.tensor([reference_mean(model, s, start) for s, start in zip(sequences, starts)])
    for batch_size in (1, 4, 100):
        assert torch.allclose(zs.mean_logprobs(model, sequences, starts, batch_size), expected, atol=1e-5)
    one = zs.next_token_logprobs(model, sequences, [5, 7, 11], 1)
    assert torch.allclose(one, zs.next_token_logprobs(model, sequences, [5, 7, 11], 64), atol=1e-5)
    with torch.no_grad():
        last = torch.log_softmax(model.lm_logits(model(torch.tensor([sequences[2]])))[0, -1], -1)
    assert torch.allclose(one[2], last[[5, 7, 11]], atol=1e-5)


def test_a_whole_task_scores_alike_in_batches_of_one_and_of_many():
    tok = tiny_tokenizer()
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, n_ctx=64, n_layer=2, n_head=2, n_embd=32)).eval()
    cfg = load_config(None, [f"zeroshot.roots.race={ROOTS['race']}"])
    task = zs.prepare(cfg, "race", tok, 64, None)
    inputs = task.evals[0][1]
    one, many = (task.heuristic.scores(model, inputs, b) for b in (1, 16))
    assert torch.allclose(one, many, atol=1e-5)
    assert task.score(model, 1) == pytest.approx(task.score(model, 16))


# -- bad input --------------------------------------------------------------------------------------
def test_a_verbaliser_word_of_several_tokens_is_refused_naming_how_it_splits():
    tok = tiny_tokenizer()
    with pytest.raises(ConfigError, match=r"verbaliser word 'xylophone' \(zeroshot.verbalisers.polarity\) is 6 "
                                          r"tokens for this checkpoint's tokenizer \('x' \+ 'y' \+ 'lo' \+ 'p' \+ "
                                          r"'h' \+ 'one'\)"):
        zs.Verbaliser(get_task("polarity"), tok, 64, settings("zeroshot.verbalisers.polarity=[the,xylophone]"))
    # the paper's words split too in this 400-token vocabulary: the defaults are checked alike
    with pytest.raises(ConfigError, match="'negative'"):
        zs.Verbaliser(get_task("sst2"), tok, 64, settings())


@pytest.mark.parametrize("name, kind", [("stsb", "similarity, a regression score"), ("rte", "entailment"),
                                        ("mnli", "entailment"), ("qqp", "similarity")])
def test_a_task_type_without_a_heuristic_is_refused(name, kind):
    with pytest.raises(ConfigError, match=rf"no heuristic for task {name} \({kind}\)"):
        zs.heuristic_of(get_task(name))
    with pytest.raises(ConfigError, match=f"no heuristic for task {name}"):
        zs.check_tasks(load_config(None, [f"zeroshot.tasks=[{name}]"]), tiny_tokenizer(), 64)


def test_verbaliser_settings_are_checked():
    tok = tiny_tokenizer()
    other = dataclasses.replace(get_task("sst2"), name="reviews")
    with pytest.raises(ConfigError, match=r"task reviews has no default verbaliser words.*zeroshot.verbalisers.reviews="):
        zs.Verbaliser(other, tok, 64, settings())
    with pytest.raises(ConfigError, match="has 3 word.*but task polarity has 2 labels"):
        zs.Verbaliser(get_task("polarity"), tok, 64, settings("zeroshot.verbalisers.polarity=[the,a,it]"))
    with pytest.raises(ConfigError, match="two labels have the same word"):
        zs.Verbaliser(get_task("polarity"), tok, 64, settings("zeroshot.verbalisers.polarity=[the,The]"))
    with pytest.raises(ConfigError, match="zeroshot.verbalisers.cola: task cola is scored by acceptability"):
        zs.check_tasks(load_config(None, ["zeroshot.tasks=[cola]", "zeroshot.verbalisers.cola=[the,a]"]), tok, 64)
    with pytest.raises(ConfigError, match="unknown task 'polarty'"):
        zs.check_tasks(load_config(None, ["zeroshot.verbalisers.polarty=[the,a]"]), tok, 64)


@pytest.mark.parametrize("overrides, error", [
    (["zeroshot.tasks=polarity,cola"], "list several tasks in brackets"),
    (["zeroshot.every_n_steps=0"], "'zeroshot.every_n_steps' must be >= 1"),
    (["zeroshot.split=dev"], "'zeroshot.split' is 'dev'; choose one of validation, test"),
    (["zeroshot.verbalisers.sst2=[bad,'']"], "zeroshot.verbalisers.sst2 must hold one non-empty word per label"),
])
def test_recipe_values_are_checked(overrides, error):
    with pytest.raises(ConfigError, match=error):
        load_config(QUICK, overrides)


def test_data_that_cannot_be_scored_is_refused():
    tok = tiny_tokenizer()
    with pytest.raises(ConfigError, match="zeroshot.roots.race is not set: point it at the RACE files"):
        zs.prepare(load_config(None, []), "race", tok, 64, None)
    cfg = load_config(None, [f"zeroshot.roots.sst2={ROOTS['sst2']}", "zeroshot.split=test",
                             "zeroshot.verbalisers.sst2=[the,a]"])
    with pytest.raises(DataError, match="its test split carries no labels.*zeroshot.split=validation"):
        zs.prepare(cfg, "sst2", tok, 64, None)
    with pytest.raises(ConfigError, match="trainer.strategy=fsdp shards"):
        zs.ZeroshotCurve(load_config(QUICK, ["zeroshot.tasks=[polarity]", "trainer.strategy=fsdp"]), tok, ".")


# -- the verb ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(corpus):
    """A 30-update tiny pretraining run on news text; its tokenizer splits "bad" and "good", so the tests
    name one-token words."""
    root, path = corpus
    args = tiny_args(path, root, "zs-pretrain")
    fit(args, Record())
    return root, args


def zeroshot_args(args):
    return [*args, "zeroshot.tasks=[polarity]", f"zeroshot.roots.polarity={ROOTS['polarity']}",
            "zeroshot.verbalisers.polarity=[the,a]"]


def test_the_verb_scores_a_checkpoint_and_writes_its_results(tiny_run, capsys):
    root, args = tiny_run
    assert main(["zeroshot", QUICK, *zeroshot_args(args), "ckpt_path=last"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("zeroshot/polarity/acc\t")
    results = json.loads((root / "runs" / "zs-pretrain" / "results" / "zeroshot.json").read_text())
    assert results["step"] == N_STEPS and results["checkpoint"].endswith("zs-pretrain/checkpoints/last.ckpt")
    assert results["metrics"]["zeroshot/polarity/acc"] == pytest.approx(float(out[0].split("\t")[1]), abs=1e-5)

    # an untrained model of the same size, for the "random network is at chance" comparison
    assert main(["zeroshot", QUICK, *zeroshot_args(args), "ckpt_path=last", "zeroshot.untrained=true"]) == 0
    assert capsys.readouterr().out.startswith("zeroshot/polarity/acc\t")
    untrained = json.loads((root / "runs" / "zs-pretrain" / "results" / "zeroshot-untrained.json").read_text())
    assert untrained["checkpoint"] is None and "zeroshot/polarity/acc" in untrained["metrics"]


def test_the_verb_scores_a_fine_tuning_recipes_own_task_from_its_init_checkpoint(tiny_run, capsys):
    root, args = tiny_run
    ckpt = root / "runs" / "zs-pretrain" / "checkpoints" / "last.ckpt"
    finetune = str(REPO / "recipes" / "quickstart" / "finetune.yaml")
    code = main(["zeroshot", finetune, f"init.checkpoint={ckpt}", f"data.root={ROOTS['polarity']}",
                 f"run.data_dir={root / 'data'}", "zeroshot.verbalisers.polarity=[the,a]", "zeroshot.max_examples=10"])
    assert code == 0
    assert capsys.readouterr().out.startswith("zeroshot/polarity/acc\t")
    assert json.loads((root / "runs" / "zs-pretrain" / "results" / "zeroshot.json").read_text())["step"] == N_STEPS


def test_the_verb_scores_a_pretrained_model_folder_like_its_checkpoint(tiny_run, tmp_path, capsys):
    root, args = tiny_run
    folder = tmp_path / "exported"  # what `gptkit import openai-gpt` writes for the released GPT-1
    assert main(["export", str(root / "runs" / "zs-pretrain" / "checkpoints" / "last.ckpt"), "--to", "gptkit",
                 str(folder)]) == 0
    capsys.readouterr()
    scores = []
    for ckpt in (folder, root / "runs" / "zs-pretrain" / "checkpoints" / "last.ckpt"):
        assert main(["zeroshot", QUICK, *zeroshot_args(args), f"ckpt_path={ckpt}", f"run.dir={tmp_path}"]) == 0
        scores.append(capsys.readouterr().out)
    assert scores[0] == scores[1]
    results = json.loads((tmp_path / "zs-pretrain" / "results" / "zeroshot.json").read_text())
    assert results["checkpoint"] == str(folder.resolve()) and results["step"] is None  # (not a run's checkpoint)


def test_the_verb_without_a_checkpoint_says_how_to_give_one(tiny_run, capsys):
    _, args = tiny_run
    assert main(["zeroshot", QUICK, *zeroshot_args(args)]) == 2
    err = capsys.readouterr().err
    assert "needs a checkpoint to score: add ckpt_path=PATH" in err and "zeroshot.untrained=true" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_the_zeroshot_command_line(tiny_run, tmp_path):
    root, args = tiny_run
    result = run_cli("zeroshot", QUICK, *zeroshot_args(args), "ckpt_path=last", "zeroshot.max_examples=5",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("zeroshot/polarity/acc\t") and "zeroshot results ->" in result.stderr


# -- the curve during a fit -------------------------------------------------------------------------
def curve_args(corpus, name, *extra):
    root, path = corpus
    return zeroshot_args(tiny_args(path, root, name, "zeroshot.every_n_steps=10", "zeroshot.fit_max_examples=20",
                                   *extra))


def test_the_curve_leaves_training_as_it_was_and_logs_each_point(corpus):
    root, path = corpus
    without, with_curve = Record(), Record()
    fit(tiny_args(path, root, "zs-off", "logging.throughput=true"), without)
    fit(curve_args(corpus, "zs-on", "logging.throughput=true"), with_curve)  # (its time is left out of tokens/s)
    assert with_curve.losses == without.losses and len(without.losses) == N_STEPS  # dropout on: no draw moved

    run = root / "runs" / "zs-on"
    points = [json.loads(line) for line in (run / "zeroshot.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == [0, 10, 20, 30]  # before training, every 10 updates, the end
    assert {p["task"] for p in points} == {"polarity"} and all(p["examples"] == 20 for p in points)
    assert all(p["metric"] == "acc" and p["seconds"] >= 0 and 0 <= p["value"] <= 1 for p in points)
    logged = scalars(run, "zeroshot/polarity")
    assert [s for s, _ in logged] == [0, 10, 20, 30]
    assert [v for _, v in logged] == pytest.approx([p["value"] for p in points])
    assert (run / "zeroshot.png").is_file()


def test_under_ddp_only_the_first_process_scores(tmp_path):
    curve = zs.ZeroshotCurve(load_config(QUICK, ["zeroshot.tasks=[polarity]", "zeroshot.verbalisers.polarity=[the,a]"]),
                             tiny_tokenizer(), tmp_path)
    other = SimpleNamespace(is_global_zero=False, global_step=200)  # rank 1: nothing it scores, logs or writes
    curve.on_train_batch_end(other, None, None, None, 0)
    assert curve.last_step == 200 and not curve.path.exists()


def test_a_fine_tuning_fit_draws_the_curve_of_its_own_task(tmp_path):
    tiny_tokenizer().save(tmp_path / "tok.json")
    args = [f"data.root={ROOTS['sst2']}", f"tokenizer.path={tmp_path / 'tok.json'}", f"run.dir={tmp_path}",
            "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.n_ctx=64", "data.batch_size=4",
            "trainer.max_steps=6", "trainer.limit_val_batches=1", "trainer.accelerator=cpu", "trainer.devices=1",
            "trainer.log_every_n_steps=1", "logging.progress=none", "logging.throughput=false", "run.name=sst2-curve",
            "zeroshot.tasks=[sst2]", "zeroshot.every_n_steps=4", "zeroshot.verbalisers.sst2=[the,a]"]
    without, with_curve = Record(), Record()
    recipe = str(REPO / "recipes" / "sst2.yaml")
    fit([*args[:-3], "run.name=sst2-plain"], without, recipe)
    fit(args, with_curve, recipe)
    assert with_curve.losses == without.losses
    points = [json.loads(line) for line in (tmp_path / "sst2-curve" / "zeroshot.jsonl").read_text().splitlines()]
    assert [(p["step"], p["task"], p["examples"]) for p in points] == [(0, "sst2", 50), (4, "sst2", 50),
                                                                         (6, "sst2", 50)]


def test_a_resumed_fit_with_the_curve_resumes_exactly_and_keeps_each_point_once(corpus):
    root, path = corpus
    baseline, second = Record(), Record()
    fit(tiny_args(path, root, "zs-baseline"), baseline)
    args = curve_args(corpus, "zs-resumed")
    with pytest.raises(RuntimeError, match="simulated"):
        fit(args, Record(19, "crash"))  # scored at 0 and 10; the last checkpoint is at update 16
    fit([*args, "ckpt_path=last"], second)
    assert min(second.losses) == 17
    for step in range(17, N_STEPS + 1):
        assert second.losses[step] == pytest.approx(baseline.losses[step], rel=1e-6, abs=1e-7)
    points = [json.loads(line) for line in (root / "runs" / "zs-resumed" / "zeroshot.jsonl").read_text().splitlines()]
    assert [p["step"] for p in points] == [0, 10, 20, 30]
