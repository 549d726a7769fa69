"""bAbI question answering: the parser, the memory network's pieces by hand, the QA recipes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from graphmem.cli import main
from graphmem.data import BabiDataModule, BabiFormatError, DataFileError, load_babi, parse_babi
from graphmem.data.babi import babi_relative_path
from graphmem.lit import QATask, error_table
from graphmem.models import NTMQA, MemoryNetwork, SentenceEncoder, position_encoding
from graphmem.models.sentence_encoding import unique_sentences
from tests.conftest import assert_graphmem_tables_only, rows_in_order
from tests.hand_attention import NORMALIZER_NAMES, SCORE_NAMES, hand_normalize, hand_score, randomize

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
MIRROR = Path(os.environ.get("GRAPHMEM_DATA", "/nonexistent")) / "babi" / "tasks_1-20_v1-2"

STORY = """\
1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Mary travelled to the office.
6 Where is Mary? \toffice\t5
1 Sandra journeyed to the garden.
2 Where is Sandra? \tgarden\t1
"""


def write_task(root: Path, task: int, split: str, text: str, size: str = "1k") -> Path:
    path = root / babi_relative_path(task, size, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_parser_reads_stories_answers_and_supporting_facts():
    examples = parse_babi(STORY.splitlines(), task=1)
    assert len(examples) == 3
    first, second, third = examples
    assert first.story == (("mary", "moved", "to", "the", "bathroom"), ("john", "went", "to", "the", "hallway"))
    assert first.question == ("where", "is", "mary") and first.answer == "bathroom" and first.supporting == (0,)
    # questions are not memories: the second question's story has the 4 statements so far
    assert len(second.story) == 4 and second.answer == "office"
    assert second.story[second.supporting[0]] == ("mary", "travelled", "to", "the", "office")
    # id 1 starts a new story
    assert third.story == (("sandra", "journeyed", "to", "the", "garden"),) and third.supporting == (0,)
    assert {ex.task for ex in examples} == {1}


@pytest.mark.parametrize("line, reason", [
    ("one Mary moved.", "numeric id"),
    ("3 Mary moved.", "does not follow"),
    ("2 Where is Mary? \tbathroom", "question line"),
    ("2 Where is Mary? \tbathroom\t7", "supporting ids"),
])
def test_malformed_line_is_reported_with_its_number(line, reason):
    lines = ["1 Mary moved to the bathroom.", line]
    with pytest.raises(BabiFormatError, match=rf"qa1.txt:2: .*{reason}"):
        parse_babi(lines, 1, "qa1.txt")


def test_missing_file_names_the_path_and_the_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHMEM_CACHE", str(tmp_path / "cache"))
    # an unreachable archive, so that the test never touches the network
    monkeypatch.setattr("graphmem.data.babi.BABI_URL", (tmp_path / "absent.tar.gz").as_uri())
    write_task(tmp_path, 1, "train", STORY)
    with pytest.raises(DataFileError, match=r"qa1_single-supporting-fact_test.txt.*skip_tasks"):
        load_babi(1, "1k", "test", root=tmp_path)


def test_datamodule_pads_splits_and_skips_tasks(tmp_path):
    for task in (1, 2):
        write_task(tmp_path, task, "train", STORY * 4)
        write_task(tmp_path, task, "test", STORY)
    dm = BabiDataModule(tasks=[1, 2, 3], batch_size=4, memory_size=3, val_fraction=0.25, skip_tasks=[3],
                        root=str(tmp_path))
    dm.setup()
    assert dm.tasks == [1, 2] and dm.skipped == [3]
    train, valid, test = dm.splits["train"], dm.splits["valid"], dm.splits["test"]
    assert len(train.answers) == 18 and len(valid.answers) == 6 and len(test.answers) == 6  # 12 per task, 25% held out
    # the longest sentence has 6 words ("daniel went back to the hallway"); of 4 statements the last 3 are kept
    assert test.stories.shape == (6, 3, 6) and test.questions.shape == (6, 6)
    words = dm.vocab.words
    second = test.stories[1]  # the story of "Where is Mary? office": statements 2-4
    assert [words[i] for i in second[-1]] == ["mary", "travelled", "to", "the", "office", "<pad>"]
    assert [words[i] for i in second[0]] == ["john", "went", "to", "the", "hallway", "<pad>"]
    assert [words[i] for i in test.stories[2, 0, :5]] == ["sandra", "journeyed", "to", "the", "garden"]
    assert test.stories[2, 1:].eq(0).all()  # empty memory slots are padding
    assert words[test.answers[1]] == "office" and test.tasks.tolist() == [1, 1, 1, 2, 2, 2]
    stories, questions, answers, tasks = next(iter(dm.train_dataloader()))
    assert stories.shape == (4, 3, 6) and questions.shape == (4, 6) and answers.shape == tasks.shape == (4,)
    with pytest.raises(ValueError, match="leaves none"):
        BabiDataModule(tasks=[3], skip_tasks=[3])


@pytest.mark.skipif(not (MIRROR / "en").is_dir(), reason="set GRAPHMEM_DATA to the offline mirror holding babi/")
def test_real_files_have_the_published_counts():
    train, test = load_babi(1, "1k", "train"), load_babi(1, "1k", "test")
    assert len(train) == 1000 and len(test) == 1000
    assert train[0].question == ("where", "is", "mary") and train[0].answer == "bathroom"
    assert train[0].story[train[0].supporting[0]] == ("mary", "moved", "to", "the", "bathroom")
    assert {ex.answer for ex in load_babi(19, "1k", "test")} >= {"e,n", "w,w"}  # one token per answer
    if not (MIRROR / "en-10k" / "qa3_three-supporting-facts_train.txt").exists():
        with pytest.raises(DataFileError, match="qa3_three-supporting-facts_train.txt"):
            BabiDataModule(tasks=[3], size="10k").prepare_data()


def test_position_encoding_matches_the_paper():
    words = torch.tensor([[5, 7, 9, 0, 0]])  # J = 3 words, then padding
    d = 4
    expected = torch.zeros(1, 5, d)
    for j in range(1, 4):
        for k in range(1, d + 1):
            expected[0, j - 1, k - 1] = (1 - j / 3) - (k / d) * (1 - 2 * j / 3)
    assert torch.allclose(position_encoding(words, d), expected)


def test_centred_position_encoding_matches_the_authors_code():
    words = torch.tensor([[5, 7, 9, 0, 0]])  # J is the padded width, 5, for every sentence
    d = 4
    expected = torch.zeros(1, 5, d)
    for j in range(1, 4):
        for k in range(1, d + 1):
            expected[0, j - 1, k - 1] = 1 + 4 * (k - (d + 1) / 2) * (j - (5 + 1) / 2) / (d * 5)
    assert torch.allclose(position_encoding(words, d, "centred"), expected)
    encoder = SentenceEncoder(10, d, position="centred")
    by_hand = (encoder.embedding.weight[words] * expected).sum(-2)
    assert torch.allclose(encoder(words), by_hand)
    with pytest.raises(ValueError, match="unknown position encoding"):
        SentenceEncoder(10, d, position="sinusoidal")


def test_linear_start_lr_is_a_phase_of_its_own():
    # a linear-start phase at its own rate, then lr halved every 15 epochs (rates unlike the
    # MemN2N code's, 0.005 in both phases, so that the two phases are told apart)
    task = QATask(MemoryNetwork(vocab_size=15, embedding_dim=4, hops=1), lr=0.01, lr_decay_every=15,
                  linear_start_epochs=30, linear_start_lr=0.005)
    scheduler = task.configure_optimizers()["lr_scheduler"]
    lrs = []
    for _ in range(80):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert lrs[0] == lrs[29] == 0.005
    assert lrs[30] == lrs[44] == 0.01 and lrs[45] == 0.005 and lrs[60] == 0.0025
    # without linear_start_lr one schedule runs from the first epoch, as before
    plain = QATask(MemoryNetwork(vocab_size=15, embedding_dim=4, hops=1), lr=0.01, lr_decay_every=15,
                   linear_start_epochs=30)
    assert [plain.lr_factor(e) for e in (0, 14, 15, 30)] == [1.0, 1.0, 0.5, 0.25]


def test_unique_sentences_round_trips():
    words = torch.randint(0, 3, (200, 9))
    unique, inverse = unique_sentences(words, 3)
    assert torch.equal(unique[inverse], words)
    assert len(unique) == len(torch.unique(words, dim=0))


def test_memory_network_shapes_and_gradients():
    model = MemoryNetwork(vocab_size=20, embedding_dim=8, hops=3, memory_size=6)
    story = torch.randint(1, 20, (4, 6, 5))
    story[:, 4:] = 0  # two empty slots
    logits, attention = model(story, torch.randint(1, 20, (4, 5)), return_attention_weights=True)
    assert logits.shape == (4, 20) and attention.shape == (4, 3, 6)
    assert torch.allclose(attention.sum(-1), torch.ones(4, 3)) and attention[..., 4:].eq(0).all()
    logits.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_first_hop_is_softmax_of_memory_dot_question():
    torch.manual_seed(0)
    model = MemoryNetwork(vocab_size=12, embedding_dim=6, hops=1, memory_size=4, noise=0.0).eval()
    story = torch.tensor([[[1, 2, 3], [4, 5, 0], [6, 0, 0], [0, 0, 0]]])
    question = torch.tensor([[7, 8, 0]])
    logits, attention = model(story, question, return_attention_weights=True)
    A, C = model.embeddings[0].embedding.weight, model.embeddings[1].embedding.weight

    def encode(table, ids):  # the paper's position encoding, by hand
        ids = [i for i in ids if i]
        J, d = len(ids), table.size(1)
        return sum(torch.tensor([(1 - j / J) - (k / d) * (1 - 2 * j / J) for k in range(1, d + 1)]) * table[i]
                   for j, i in enumerate(ids, start=1))

    ages = [2, 1, 0]  # the newest of the 3 statements has age 0
    m = torch.stack([encode(A, s) + model.temporal[0, a] for s, a in zip(story[0, :3].tolist(), ages)])
    c = torch.stack([encode(C, s) + model.temporal[1, a] for s, a in zip(story[0, :3].tolist(), ages)])
    u = encode(A, question[0].tolist())
    p = torch.softmax(m @ u, 0)
    assert torch.allclose(attention[0, 0, :3], p, atol=1e-6) and attention[0, 0, 3] == 0
    assert torch.allclose(logits[0], (u + p @ c) @ C.t(), atol=1e-5)  # W^T = C^K
    model.linear_start = True  # softmax removed: the raw dot products
    _, linear = model(story, question, return_attention_weights=True)
    assert torch.allclose(linear[0, 0, :3], m @ u, atol=1e-6)


def _hand_attend_memory_network(model: MemoryNetwork, story: torch.Tensor, question: torch.Tensor,
                                linear: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MemN2N with the authors' empty slots, written out for a bag-of-words model with temporal
    encoding and the dot score: the n real statements have keys m_i = sum_j A x_ij + T_A(age_i),
    the M - n empty ones logit 0 and value 0, so p_i = e^{s_i} / (sum_j e^{s_j} + M - n) on the
    real ones and 1 / (sum_j e^{s_j} + M - n) on each empty one (linear start: p_i = s_i, 0)."""
    tables = [e.embedding.weight for e in model.embeddings]
    M, all_logits, all_weights = model.memory_size, [], []
    for words, query in zip(story, question):
        n = int(words.ne(0).any(-1).sum())  # real statements come first
        ages = torch.arange(n - 1, -1, -1)  # newest = 0
        memories = [table[words[:n]].sum(-2) + model.temporal[k, ages] for k, table in enumerate(tables)]
        u, hops = tables[0][query].sum(-2), []
        for hop in range(model.hops):
            s = memories[hop] @ u  # (n,)
            if linear:
                p = torch.cat([s, s.new_zeros(M - n)])
            else:
                denominator = s.exp().sum() + (M - n)
                p = torch.cat([s.exp(), s.new_ones(M - n)]) / denominator
            u = u + p[:n] @ memories[hop + 1]  # the empty slots read zero
            hops.append(p)
        all_logits.append(u @ tables[-1].t())
        all_weights.append(torch.stack(hops))
    return torch.stack(all_logits), torch.stack(all_weights)


@pytest.mark.parametrize("linear_start", [False, True])
def test_attend_empty_slots_by_hand(linear_start):
    torch.manual_seed(0)
    model = MemoryNetwork(vocab_size=12, embedding_dim=5, hops=2, memory_size=6, position_encoding=False,
                          noise=0.0, empty_slots="attend").double().eval()
    model.linear_start = linear_start
    # S = 4 < M = 6: 3 and 2 real statements, so 3 and 4 empty slots after padding to M
    story = torch.tensor([[[1, 2, 3], [4, 5, 0], [6, 0, 0], [0, 0, 0]], [[7, 8, 0], [9, 1, 2], [0, 0, 0], [0, 0, 0]]])
    question = torch.tensor([[7, 8, 0], [3, 0, 0]])
    logits, attention = model(story, question, return_attention_weights=True)
    ref_logits, ref_attention = _hand_attend_memory_network(model, story, question, linear_start)
    assert attention.shape == (2, 2, 6)  # (B, K, M): the model's slots, not the story's
    torch.testing.assert_close(attention, ref_attention)
    torch.testing.assert_close(logits, ref_logits)
    if not linear_start:  # the mass on the real statements is below one: the rest is the sink
        torch.testing.assert_close(attention.sum(-1), torch.ones(2, 2, dtype=torch.float64))
        assert (attention[0, :, :3].sum(-1) < 1).all() and (attention[1, :, :2].sum(-1) < 1).all()


def test_attend_does_not_depend_on_how_the_story_is_padded():
    torch.manual_seed(0)
    model = MemoryNetwork(vocab_size=12, embedding_dim=5, hops=3, memory_size=6, noise=0.0,
                          empty_slots="attend").eval()
    story = torch.randint(1, 12, (3, 3, 4))
    story[1, 2:] = 0
    question = torch.randint(1, 12, (3, 4))
    short = model(story, question)
    for slots in (4, 6):  # padded by the data to S <= M rather than by the model
        padded = torch.cat([story, torch.zeros(3, slots - 3, 4, dtype=torch.long)], 1)
        torch.testing.assert_close(model(padded, question), short)
    # the default masks the empty slots: the same padding changes nothing there either, while
    # "attend" gives weight to them and so answers differently
    masked = MemoryNetwork(vocab_size=12, embedding_dim=5, hops=3, memory_size=6, noise=0.0).eval()
    masked.load_state_dict(model.state_dict())
    padded = torch.cat([story, torch.zeros(3, 3, 4, dtype=torch.long)], 1)
    torch.testing.assert_close(masked(padded, question), masked(story, question))
    assert not torch.allclose(masked(story, question), short)
    with pytest.raises(ValueError, match="a story of 7 slots does not fit memory_size 6"):
        model(torch.cat([padded, padded[:, :1]], 1), question)


def test_attend_trains_every_parameter_with_noise():
    model = MemoryNetwork(vocab_size=20, embedding_dim=8, hops=3, memory_size=8, noise=0.5,
                          empty_slots="attend")
    story = torch.randint(1, 20, (4, 6, 5))
    story[:, 4:] = 0
    logits, attention = model(story, torch.randint(1, 20, (4, 5)), return_attention_weights=True)
    assert logits.shape == (4, 20) and attention.shape == (4, 3, 8) and (attention[..., 4:] > 0).all()
    logits.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert "empty_slots='attend'" in repr(model) and "empty_slots" not in repr(MemoryNetwork(vocab_size=5))
    with pytest.raises(ValueError, match="unknown empty_slots 'ignore'; choose one of mask, attend"):
        MemoryNetwork(vocab_size=5, empty_slots="ignore")


def _hand_memory_network(model: MemoryNetwork, story: torch.Tensor, question: torch.Tensor,
                         normalizer: str, uniforms: list[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """MemN2N written out, for a bag-of-words model without temporal encoding:
    p = normalize(s(m_i, u)) over the statements that exist, u <- u + sum_i p_i c_i, a = W u."""
    tables = [e.embedding.weight for e in model.embeddings]
    memories = [table[story].sum(-2) for table in tables]  # (B, S, d) per embedding; row 0 is zero
    keep = story.ne(0).any(-1)[:, None, None, :]  # (B, 1, 1, S)
    u = tables[0][question].sum(-2)  # (B, d)
    hops = []
    for hop in range(model.hops):
        logits = hand_score(model.score, model.scorer, u[:, None, None, :], memories[hop][:, None])
        p = hand_normalize(normalizer, logits, keep, uniforms[hop])  # (B, 1, 1, S)
        u = u + (p @ memories[hop + 1][:, None]).flatten(1)
        hops.append(p.flatten(1))
    return u @ tables[-1].t(), torch.stack(hops, 1)


@pytest.mark.parametrize(("score", "normalizer"), [(s, n) for s in SCORE_NAMES for n in NORMALIZER_NAMES])
@pytest.mark.parametrize("linear_start", [False, True])
def test_memory_network_every_score_and_normalizer_by_hand(score, normalizer, linear_start):
    model = MemoryNetwork(vocab_size=12, embedding_dim=5, hops=2, memory_size=4, position_encoding=False,
                          temporal_encoding=False, noise=0.0, score=score, normalizer=normalizer).double().eval()
    randomize(model.scorer)
    model.linear_start = linear_start  # the paper's linear start: no normalization at all
    story = torch.tensor([[[1, 2, 3], [4, 5, 0], [6, 0, 0], [0, 0, 0]], [[7, 8, 0], [9, 1, 2], [0, 0, 0], [0, 0, 0]]])
    question = torch.tensor([[7, 8, 0], [3, 0, 0]])
    torch.manual_seed(1)
    logits, attention = model(story, question, return_attention_weights=True)
    used = "none" if linear_start else normalizer
    torch.manual_seed(1)  # the U(0, 1) draws of a Gumbel normalizer, one (B, 1, S) per hop
    uniforms = [torch.rand(2, 1, 4, dtype=torch.float64).unsqueeze(1) if used.startswith("gumbel") else None
                for _ in range(model.hops)]
    ref_logits, ref_attention = _hand_memory_network(model, story, question, used, uniforms)
    torch.testing.assert_close(attention, ref_attention)
    torch.testing.assert_close(logits, ref_logits)


@pytest.mark.parametrize("empty_slots", ["mask", "attend"])
def test_layerwise_tying_by_hand(empty_slots):
    # the paper's RNN-like tying: one A and one C (with T_A, T_C) for all hops, B and W of their
    # own, u^{k+1} = H u^k + sum_i p_i c_i
    torch.manual_seed(0)
    model = MemoryNetwork(vocab_size=12, embedding_dim=5, hops=3, memory_size=4, position_encoding=False,
                          noise=0.0, tying="layerwise", empty_slots=empty_slots).double().eval()
    story = torch.tensor([[[1, 2, 3], [4, 5, 0], [6, 0, 0], [0, 0, 0]], [[7, 8, 0], [9, 1, 2], [0, 0, 0], [0, 0, 0]]])
    question = torch.tensor([[7, 8, 0], [3, 0, 0]])
    logits, attention = model(story, question, return_attention_weights=True)
    B, A, C = (e.embedding.weight for e in model.embeddings)
    H, W = model.hop_map.weight, model.answer.weight
    for b in range(2):
        n = int(story[b].ne(0).any(-1).sum())
        ages = torch.arange(n - 1, -1, -1)
        m = A[story[b, :n]].sum(-2) + model.temporal[0, ages]
        c = C[story[b, :n]].sum(-2) + model.temporal[1, ages]
        u = B[question[b]].sum(-2)
        for hop in range(3):
            s = m @ u
            if empty_slots == "mask":
                p = torch.softmax(s, 0)
            else:  # the empty slots: logit 0, value 0
                p = s.exp() / (s.exp().sum() + 4 - n)
            torch.testing.assert_close(attention[b, hop, :n], p)
            u = H @ u + p @ c
        torch.testing.assert_close(logits[b], W @ u)
    logits.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert model.temporal.shape == (2, 4, 5) and len(model.embeddings) == 3
    assert "tying='layerwise'" in repr(model) and "tying" not in repr(MemoryNetwork(vocab_size=5))
    # per-matrix clipping with the time words: [A; T_A] and [C; T_C] are one matrix each, B alone
    model.clip_temporal_with_words = True
    groups = model.gradient_groups()
    assert sorted(len(g) for g in groups) == [1, 1, 1, 2, 2]
    assert any(g[0] is A.grad and g[1].data_ptr() == model.temporal.grad[0].data_ptr() for g in groups)
    assert any(g[0] is C.grad and g[1].data_ptr() == model.temporal.grad[1].data_ptr() for g in groups)
    with pytest.raises(ValueError, match="unknown tying 'shared'; choose one of adjacent, layerwise"):
        MemoryNetwork(vocab_size=5, tying="shared")


def test_memory_network_rejects_unknown_score_and_normalizer():
    with pytest.raises(ValueError, match="unknown score 'euclid'; choose one of gat, gatv2, additive"):
        MemoryNetwork(vocab_size=5, score="euclid")
    with pytest.raises(ValueError, match="unknown normalizer 'sparsemax'; choose one of softmax, hard"):
        MemoryNetwork(vocab_size=5, normalizer="sparsemax")


def test_random_noise_only_ages_statements_in_training():
    model = MemoryNetwork(vocab_size=10, embedding_dim=4, memory_size=50, noise=0.5)
    mask = torch.ones(2, 8, dtype=torch.bool)
    assert model.eval()._ages(mask).tolist() == [list(range(7, -1, -1))] * 2
    noisy = model.train()._ages(mask)
    assert (noisy >= model.eval()._ages(mask)).all() and (noisy[:, :-1] > noisy[:, 1:]).all()


def test_ntm_qa_reads_the_story_then_the_question():
    model = NTMQA(vocab_size=15, embedding_dim=6, memory_size=8, memory_width=5, controller_size=12)
    story = torch.randint(1, 15, (3, 4, 5))
    story[0, 2:] = 0
    logits = model(story, torch.randint(1, 15, (3, 5)))
    assert logits.shape == (3, 15)
    logits.sum().backward()
    assert model.encoder.embedding.weight.grad.abs().sum() > 0
    # empty slots are skipped, not read: a story padded with more empty slots gives the same answer
    padded = torch.cat([story, torch.zeros(3, 2, 5, dtype=torch.long)], 1)
    question = torch.randint(1, 15, (3, 5))
    assert torch.allclose(model(story, question), model(padded, question), atol=1e-6)


@pytest.mark.parametrize("question_context", [False, True])
def test_ntm_qa_steps_by_hand(question_context):
    """The NTM's input, step by step: [s_i, 0] per statement (right-aligned, empty slots dropped),
    then [q, 1] answer_steps times; with question_context the question joins every step,
    [s_i, q, 0] ... [q, q, 1]."""
    model = NTMQA(vocab_size=15, embedding_dim=6, answer_steps=2, memory_size=8, memory_width=5,
                  controller_size=12, question_context=question_context).eval()
    story = torch.randint(1, 15, (2, 4, 5))
    story[0, 2:] = 0  # two statements, then two empty slots
    question = torch.randint(1, 15, (2, 5))
    seen = []
    model.ntm.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    model(story, question)
    x = seen[0].transpose(0, 1)  # (B, T, width)
    q = model.encoder(question)
    for b, count in enumerate((2, 4)):
        sentences = model.encoder(story[b, :count].unsqueeze(0))[0]
        rows = [torch.cat([s, torch.zeros(1)]) for s in sentences] + [torch.cat([q[b], torch.ones(1)])] * 2
        expected = torch.stack(rows)
        if question_context:
            expected = torch.cat([expected[:, :-1], q[b].expand(len(rows), -1), expected[:, -1:]], -1)
        torch.testing.assert_close(x[b, -len(rows):], expected)
        assert not x[b, :-len(rows)].any()  # a shorter story's leading empty steps are all zero
    assert x.size(1) == 4 + 2


def test_error_table_counts_failures():
    table = error_table({1: 0.0, 2: 0.3, 3: 0.06}, threshold=0.05)
    assert "| qa2 | 30.0 | yes |" in table and "| qa1 | 0.0 |  |" in table and "| mean | 12.0 | 2 failed |" in table


@pytest.mark.parametrize("recipe", ["babi_memn2n", "babi_memn2n_paper", "babi_memn2n_10k", "babi_ntm"])
def test_recipe_smoke(recipe, tmp_path, capsys, caplog):
    size = "10k" if recipe.endswith("10k") else "1k"
    for task in (1, 2, 10):
        write_task(tmp_path, task, "train", STORY * 8, size)
        write_task(tmp_path, task, "test", STORY * 2, size)
    caplog.set_level("INFO")
    # the NTM recipe's compiled step would compile four graphs here; the eager step is the same maths
    eager = ["--model.init_args.model.init_args.compile_step", "false"] if recipe == "babi_ntm" else []
    cli = main(["fit", "--config", str(RECIPES / f"{recipe}.yaml"), *eager, "--data.init_args.tasks", "[10, 1, 2]",
                "--data.init_args.root", str(tmp_path), "--data.init_args.batch_size", "8",
                "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar",
                "false", "--trainer.default_root_dir", str(tmp_path / "run"),
                "--trainer.logger.init_args.save_dir", str(tmp_path / "run")])
    metrics = cli.trainer.callback_metrics
    assert recipe != "babi_ntm" or (cli.model.model.question_context and cli.model.model.ntm.cell.address_size)
    assert {"test_error/qa1", "test_error/qa2", "test_error/qa10", "test_mean_error", "test_failed_tasks"} <= set(metrics)
    with open(Path(cli.trainer.log_dir) / "per_task_error.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["task"] for row in rows] == ["1", "2", "10"]
    assert float(metrics["test_mean_error"]) == pytest.approx(sum(float(r["error"]) for r in rows) / 3, abs=1e-4)
    # the printed table: by task name in numeric order, with the mean and the failed count, once
    assert_graphmem_tables_only(capsys, caplog)
    assert caplog.text.count("per-task test error:") == 1
    assert rows_in_order(caplog.text, ["qa1", "qa2", "qa10", "mean"])
    assert f"| mean | {100 * float(metrics['test_mean_error']):.1f} | {int(metrics['test_failed_tasks'])} failed |" \
        in caplog.text


def test_per_parameter_clipping_scales_each_gradient_to_its_own_norm():
    task = QATask(MemoryNetwork(vocab_size=15, embedding_dim=4, hops=1), optimizer="sgd", clip_per_parameter=40.0)
    parameters = list(task.parameters())
    big, small = parameters[0], parameters[1]
    big.grad = torch.full_like(big, 1.0) * (80.0 / big.numel() ** 0.5)  # norm 80 -> scaled by 1/2
    small.grad = torch.full_like(small, 1.0) * (10.0 / small.numel() ** 0.5)  # norm 10 -> kept
    before_big, before_small = big.grad.clone(), small.grad.clone()
    task.configure_gradient_clipping(task.configure_optimizers()["optimizer"])
    assert torch.allclose(big.grad, before_big / 2, rtol=1e-5)
    assert torch.allclose(small.grad, before_small)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_weight_decay_adds_its_penalty_to_every_gradient(optimizer):
    torch.manual_seed(0)
    task = QATask(NTMQA(vocab_size=15, embedding_dim=4, memory_size=3, memory_width=2, controller_size=4),
                  lr=0.1, optimizer=optimizer, weight_decay=0.25, lr_decay_every=0)
    before = [p.detach().clone() for p in task.parameters()]
    for p in task.parameters():
        p.grad = torch.ones_like(p)
    task.configure_optimizers().step()
    for p, w in zip(task.parameters(), before):
        g = 1 + 0.25 * w  # the gradient with the L2 penalty's, g + lambda w
        # SGD: w - lr g; Adam's first step: w - lr g / (|g| + eps), bias corrections cancelling
        expected = w - 0.1 * (g if optimizer == "sgd" else g / (g.abs() + 1e-8))
        torch.testing.assert_close(p.detach(), expected)
    with pytest.raises(ValueError, match="weight_decay must be at least 0"):
        QATask(NTMQA(vocab_size=15), weight_decay=-1.0)


def test_temporal_encoding_clipped_with_each_hops_word_table():
    # the authors' code: T^k is M rows of embedding k's lookup table, clipped with it as one matrix
    torch.manual_seed(0)
    model = MemoryNetwork(vocab_size=15, embedding_dim=4, hops=1, memory_size=5,
                          clip_temporal_with_words=True)
    task = QATask(model, optimizer="sgd", clip_per_parameter=40.0)
    words = [e.embedding.weight for e in model.embeddings]
    for table, size in zip(words, (60.0, 6.0)):  # table 0 with T^0: joint norm 100, table 1 with T^1: 10
        table.grad = torch.randn_like(table)
        table.grad *= size / table.grad.norm()
    model.temporal.grad = torch.randn_like(model.temporal)
    model.temporal.grad[0] *= 80.0 / model.temporal.grad[0].norm()
    model.temporal.grad[1] *= 8.0 / model.temporal.grad[1].norm()
    before = [table.grad.clone() for table in words], model.temporal.grad.clone()
    task.configure_gradient_clipping(task.configure_optimizers()["optimizer"])
    scale = 40.0 / (100.0 + 1e-6)  # min(1, 40 / ||[g_E0; g_T0]||); hop 1's 10 is under the limit
    torch.testing.assert_close(words[0].grad, before[0][0] * scale)
    torch.testing.assert_close(model.temporal.grad[0], before[1][0] * scale)
    torch.testing.assert_close(words[1].grad, before[0][1])
    torch.testing.assert_close(model.temporal.grad[1], before[1][1])
    # by default T is one parameter, clipped on its own: norm sqrt(80^2 + 8^2) scaled to 40
    model.clip_temporal_with_words = False
    model.temporal.grad = before[1].clone()
    words[0].grad = before[0][0].clone()
    task.configure_gradient_clipping(task.configure_optimizers()["optimizer"])
    torch.testing.assert_close(model.temporal.grad, before[1] * 40.0 / (before[1].norm() + 1e-6))
    torch.testing.assert_close(words[0].grad, before[0][0] * 40.0 / (60.0 + 1e-6))
    assert len(model.gradient_groups()) == 3 and "clip_temporal_with_words=True" not in repr(model)


def test_sum_reduction_scales_the_training_loss_by_the_batch():
    torch.manual_seed(0)
    model = MemoryNetwork(vocab_size=15, embedding_dim=4, hops=1, noise=0.0)
    story, question = torch.randint(1, 15, (6, 3, 5)), torch.randint(1, 15, (6, 5))
    answer, tasks = torch.randint(1, 15, (6,)), torch.ones(6, dtype=torch.long)
    expected = torch.nn.functional.cross_entropy(model(story, question), answer, reduction="sum")
    task = QATask(model, loss_reduction="sum")
    task.log = lambda *args, **kwargs: None
    assert torch.allclose(task.training_step((story, question, answer, tasks), 0), expected)
    with pytest.raises(ValueError, match="optimizer"):
        QATask(model, optimizer="rmsprop")


def test_ntm_qa_answer_steps_feed_the_question_again():
    """answer_steps=K: the NTM's input is the statements, then K flagged copies of the question
    (built here by hand from the encoder and fed to the NTM directly)."""
    torch.manual_seed(0)
    model = NTMQA(vocab_size=15, embedding_dim=6, memory_size=8, memory_width=5, controller_size=12,
                  answer_steps=3)
    story, question = torch.randint(1, 15, (2, 4, 5)), torch.randint(1, 15, (2, 5))
    sentences, asked = model.encoder(story), model.encoder(question)
    steps = torch.cat([torch.cat([sentences, torch.zeros(2, 4, 1)], -1),
                       torch.cat([asked, torch.ones(2, 1)], -1).unsqueeze(1).repeat(1, 3, 1)], 1)
    expected, _ = model.ntm(steps.transpose(0, 1))
    torch.testing.assert_close(model(story, question), expected[-1])
    one = NTMQA(vocab_size=15, embedding_dim=6, memory_size=8, memory_width=5, controller_size=12)
    one.load_state_dict(model.state_dict())
    assert not torch.allclose(one(story, question), model(story, question))
    with pytest.raises(ValueError, match="answer_steps must be at least 1"):
        NTMQA(vocab_size=15, answer_steps=0)


def test_ntm_qa_dropout_drops_statement_and_question_features_in_training_only():
    """dropout=p: each feature of every statement and question vector is zeroed with probability
    p and the rest scaled by 1/(1 - p) in training; the question flag is never dropped."""
    torch.manual_seed(0)
    model = NTMQA(vocab_size=15, embedding_dim=40, memory_size=8, memory_width=5, controller_size=12,
                  answer_steps=2, dropout=0.5)
    story, question = torch.randint(1, 15, (3, 4, 5)), torch.randint(1, 15, (3, 5))
    seen = []
    model.ntm.register_forward_pre_hook(lambda module, args: seen.append(args[0].transpose(0, 1)))
    model.eval()(story, question)
    model.train()(story, question)
    clean, dropped = seen
    torch.testing.assert_close(dropped[..., -1], clean[..., -1])  # the flag
    features, reference = dropped[..., :-1], clean[..., :-1]
    kept = features != 0
    torch.testing.assert_close(features[kept], 2 * reference[kept])
    assert 0.4 < 1 - kept.float().mean() < 0.6
    assert "Dropout(p=0.5" in repr(model)
