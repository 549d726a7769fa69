"""bAbI question answering (Weston et al. 2015): the 20 tasks, 1k and 10k versions.

A task file is a list of stories. Each line starts with an id; the id goes back to 1 where a
new story begins. A statement line is ``"<id> <sentence>"``; a question line is
``"<id> <question>\\t<answer>\\t<supporting ids>"``, where the supporting ids name the
statements that prove the answer. The story of a question is every statement of its story
before it (questions themselves are not memories, as in MemN2N). Answers with several words
(``"n,s"`` in task 19, ``"apple,football"`` in task 8) are one answer token.

Files are found through :func:`graphmem.data.fetch`: ``$GRAPHMEM_DATA/babi/...`` (an
offline mirror), then the download cache, then the canonical archive, which is downloaded
and extracted into the cache.
"""

from __future__ import annotations

import math
import os
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, TensorDataset

from graphmem.data.download import DATA_ENV, DataFileError, cache_dir, fetch, search_dirs
from graphmem.errors import GraphmemError

BABI_URL = "http://www.thespermwhale.com/jaseweston/babi/tasks_1-20_v1-2.tar.gz"
BABI_DIR = "babi/tasks_1-20_v1-2"
SIZES: dict[str, str] = {"1k": "en", "10k": "en-10k"}
TASK_NAMES: dict[int, str] = {
    1: "single-supporting-fact", 2: "two-supporting-facts", 3: "three-supporting-facts",
    4: "two-arg-relations", 5: "three-arg-relations", 6: "yes-no-questions", 7: "counting",
    8: "lists-sets", 9: "simple-negation", 10: "indefinite-knowledge", 11: "basic-coreference",
    12: "conjunction", 13: "compound-coreference", 14: "time-reasoning", 15: "basic-deduction",
    16: "basic-induction", 17: "positional-reasoning", 18: "size-reasoning", 19: "path-finding",
    20: "agents-motivations",
}
PAD = "<pad>"


class BabiFormatError(ValueError):
    """A line of a bAbI file that does not follow the format (the message names file and line)."""


@dataclass(frozen=True)
class BabiExample:
    """One question with its story: ``story`` is a list of tokenized statements, oldest first;
    ``supporting`` indexes into ``story``."""

    story: tuple[tuple[str, ...], ...]
    question: tuple[str, ...]
    answer: str
    supporting: tuple[int, ...]
    task: int


class BabiTensors(NamedTuple):
    """Padded examples: ``stories`` ``(N, S, W)``, ``questions`` ``(N, W)``, ``answers`` ``(N,)``,
    ``tasks`` ``(N,)`` (task numbers 1-20); word id 0 is padding."""

    stories: Tensor
    questions: Tensor
    answers: Tensor
    tasks: Tensor


def tokenize(sentence: str) -> tuple[str, ...]:
    """Lower-cased words; punctuation is dropped (``"Where is Mary?"`` -> ``("where", "is", "mary")``)."""
    return tuple(re.findall(r"\w+", sentence.lower()))


def parse_babi(lines: Iterable[str], task: int = 0, source: str = "<lines>") -> list[BabiExample]:
    """Parses the lines of one task file into examples; ``source`` names the file in errors.

    Raises :class:`BabiFormatError` naming ``source`` and the line number for a line without a
    numeric id, an id that neither starts a story (1) nor follows the previous one, a question
    line without answer and supporting ids, or a supporting id that is not an earlier statement.
    """
    examples: list[BabiExample] = []
    story: list[tuple[str, ...]] = []
    statement_index: dict[int, int] = {}  # line id -> position in story
    previous_id = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue

        def fail(reason: str, number: int = number, line: str = line) -> BabiFormatError:
            return BabiFormatError(f"{source}:{number}: {reason}: {line!r}")

        head, _, text = line.partition(" ")
        if not head.isdigit():
            raise fail("a line must start with a numeric id")
        line_id = int(head)
        if line_id == 1:
            story, statement_index = [], {}
        elif line_id != previous_id + 1:
            raise fail(f"id {line_id} does not follow {previous_id} (a new story starts at 1)")
        previous_id = line_id
        if "\t" not in text:
            statement_index[line_id] = len(story)
            story.append(tokenize(text))
            continue
        fields = text.split("\t")
        if len(fields) != 3 or not fields[1].strip() or not fields[2].split():
            raise fail("a question line needs '<question>\\t<answer>\\t<supporting ids>'")
        question, answer, support = fields
        try:
            supporting = tuple(statement_index[int(i)] for i in support.split())
        except (ValueError, KeyError):
            raise fail(f"supporting ids {support!r} must name earlier statements of the story") from None
        examples.append(BabiExample(tuple(story), tokenize(question), answer.strip().lower(), supporting, task))
    return examples


def babi_relative_path(task: int, size: str = "1k", split: str = "train") -> str:
    """Path of a task file inside the data folder, e.g. ``babi/tasks_1-20_v1-2/en/qa1_single-supporting-fact_train.txt``."""
    if task not in TASK_NAMES:
        raise GraphmemError(f"bAbI tasks are numbered 1-20, got {task}")
    if size not in SIZES:
        raise GraphmemError(f"unknown bAbI size {size!r}; choose one of {tuple(SIZES)}")
    if split not in ("train", "test"):
        raise GraphmemError(f"split must be 'train' or 'test', got {split!r}")
    return f"{BABI_DIR}/{SIZES[size]}/qa{task}_{TASK_NAMES[task]}_{split}.txt"


def babi_path(task: int, size: str = "1k", split: str = "train", root: str | os.PathLike | None = None) -> Path:
    """The local path of one task file; downloads and extracts the archive into the cache when no
    folder holds it. Raises :class:`DataFileError` naming the file and what to do."""
    relative = babi_relative_path(task, size, split)
    for folder in search_dirs(root):
        if (folder / relative).is_file():
            return folder / relative
    looked = ", ".join(str(folder / relative) for folder in search_dirs(root))
    try:
        archive = fetch(f"babi/{Path(BABI_URL).name}", BABI_URL, root)
        with tarfile.open(archive) as tar:
            tar.extractall(cache_dir() / "babi", filter="data")
    except (DataFileError, tarfile.TarError, OSError) as error:
        raise DataFileError(
            f"bAbI file {relative!r} not found (looked in: {looked}) and the archive could not be "
            f"fetched or extracted ({error}). Download {BABI_URL}, extract it into {cache_dir() / 'babi'}, "
            f"or set {DATA_ENV} to a folder holding {relative}; to train without this task, leave "
            f"task {task} out (BabiDataModule's skip_tasks)."
        ) from error
    extracted = cache_dir() / relative
    if not extracted.is_file():
        raise DataFileError(
            f"bAbI file {relative!r} not found (looked in: {looked}), and the archive {BABI_URL} does "
            f"not hold it either; to train without this task, leave task {task} out (BabiDataModule's "
            f"skip_tasks)."
        )
    return extracted


def load_babi(task: int, size: str = "1k", split: str = "train", root: str | os.PathLike | None = None) -> list[BabiExample]:
    """The examples of one task file (see :func:`parse_babi`)."""
    path = babi_path(task, size, split, root)
    with open(path, encoding="utf-8") as f:
        return parse_babi(f, task, str(path))


class Vocabulary:
    """Word ids, ``0`` for padding, the others in sorted order (so the same words give the same ids)."""

    def __init__(self, words: Iterable[str]) -> None:
        self.words: list[str] = [PAD] + sorted(set(words) - {PAD})
        self.index: dict[str, int] = {word: i for i, word in enumerate(self.words)}

    @classmethod
    def from_examples(cls, examples: Iterable[BabiExample]) -> Vocabulary:
        words: set[str] = set()
        for example in examples:
            words.update(word for sentence in example.story for word in sentence)
            words.update(example.question)
            words.add(example.answer)
        return cls(words)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: Sequence[str]) -> list[int]:
        return [self.index[word] for word in words]

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words)"


def vectorize(examples: Sequence[BabiExample], vocab: Vocabulary, memory_size: int = 50,
              sentence_size: int | None = None) -> BabiTensors:
    """Pads examples into tensors. Each story keeps its last ``memory_size`` statements, oldest
    first, padded after the newest (``S = min(memory_size, longest story)``); sentences and
    questions are padded to ``sentence_size`` words (default: the longest)."""
    stories = [example.story[-memory_size:] for example in examples]
    longest = max((len(sentence) for example in examples for sentence in (*example.story, example.question)), default=1)
    words = sentence_size or longest
    if words < longest:
        raise GraphmemError(f"sentence_size {words} is shorter than the longest sentence ({longest} words)")
    slots = max(1, max((len(story) for story in stories), default=1))
    blank = [0] * words

    def pad(sentence: Sequence[str]) -> list[int]:
        return vocab.encode(sentence) + [0] * (words - len(sentence))

    # one tensor from nested lists: building it sentence by sentence is ~10x slower
    story_ids = torch.tensor([[pad(sentence) for sentence in story] + [blank] * (slots - len(story))
                              for story in stories], dtype=torch.long).view(len(examples), slots, words)
    question_ids = torch.tensor([pad(example.question) for example in examples],
                                dtype=torch.long).view(len(examples), words)
    answers = torch.tensor([vocab.index[example.answer] for example in examples], dtype=torch.long)
    tasks = torch.tensor([example.task for example in examples], dtype=torch.long)
    return BabiTensors(story_ids, question_ids, answers, tasks)


def split_validation(examples: Sequence[BabiExample], fraction: float, seed: int) -> tuple[list[BabiExample], list[BabiExample]]:
    """Train and validation examples: a seeded ``fraction`` of each task's training questions."""
    if not 0.0 <= fraction < 1.0:
        raise GraphmemError(f"val_fraction must lie in [0, 1), got {fraction}")
    generator = torch.Generator().manual_seed(seed)
    train: list[BabiExample] = []
    valid: list[BabiExample] = []
    for task in sorted({example.task for example in examples}):
        own = [example for example in examples if example.task == task]
        order = torch.randperm(len(own), generator=generator).tolist()
        cut = round(fraction * len(own))
        valid += [own[i] for i in sorted(order[:cut])]
        train += [own[i] for i in sorted(order[cut:])]
    return train, valid


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of questions whose stories have similar lengths, the batches in random order.

    A recurrent reader (:class:`graphmem.models.NTMQA`) steps through the longest story of a
    batch; most bAbI stories hold under 10 statements, but a random joint batch nearly always
    has a 50-statement one (task 3). Ties in length are broken at random each epoch, with the
    global torch generator (seeded by ``seed_everything``, saved in checkpoints).
    """

    def __init__(self, lengths: Tensor, batch_size: int) -> None:
        self.lengths = lengths
        self.batch_size = batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths))
        order = order[torch.sort(self.lengths[order], stable=True).indices]
        batches = order.split(self.batch_size)
        for i in torch.randperm(len(batches)).tolist():
            yield batches[i].tolist()


class BabiDataModule(L.LightningDataModule):
    """bAbI tasks as batches ``(stories (B, S, W), questions (B, W), answers (B,), tasks (B,))``.

    The vocabulary is shared over the tasks used (train and test files), so one model can be
    trained jointly on all of them; test metrics are reported per task by
    :class:`graphmem.lit.QATask`.

    Args:
        tasks: task numbers, or ``"all"`` for 1-20 (joint training); ``[1]`` trains on one task.
        size: ``"1k"`` or ``"10k"`` training questions per task.
        batch_size: questions per batch.
        memory_size: statements kept per story (the most recent ones; 50 in MemN2N).
        val_fraction: share of each task's training questions held out for validation.
        seed: seed of the validation split.
        skip_tasks: tasks to leave out of ``tasks``, e.g. ``[3]`` for the 10k set of the offline
            mirror, which lacks ``qa3`` train; they are named in the log.
        root: a folder holding ``babi/tasks_1-20_v1-2/...`` (defaults to ``$GRAPHMEM_DATA``,
            then the download cache).
        num_workers: data loader workers.
        bucket_by_length: form training batches of similar story length
            (:class:`LengthBucketSampler`), for models whose cost grows with the longest story.
    """

    def __init__(
        self,
        tasks: list[int] | str = "all",
        size: str = "1k",
        batch_size: int = 32,
        memory_size: int = 50,
        val_fraction: float = 0.1,
        seed: int = 0,
        skip_tasks: list[int] | None = None,
        root: str | None = None,
        num_workers: int = 0,
        bucket_by_length: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if tasks == "all":
            tasks = list(TASK_NAMES)
        if isinstance(tasks, str) or not tasks or any(t not in TASK_NAMES for t in tasks):
            raise GraphmemError(f"tasks must be 'all' or a list of task numbers 1-20, got {tasks!r}")
        if size not in SIZES:
            raise GraphmemError(f"unknown bAbI size {size!r}; choose one of {tuple(SIZES)}")
        skipped = sorted(set(skip_tasks or ()) & set(tasks))
        self.tasks: list[int] = [t for t in tasks if t not in skipped]
        if not self.tasks:
            raise GraphmemError(f"skip_tasks {skip_tasks} leaves none of tasks {tasks}")
        self.skipped = skipped
        self.vocab: Vocabulary | None = None
        self.splits: dict[str, BabiTensors] = {}

    def prepare_data(self) -> None:
        # fetch once per node, before the processes of a multi-device run read the files
        for task in self.tasks:
            for split in ("train", "test"):
                babi_path(task, self.hparams.size, split, self.hparams.root)

    def setup(self, stage: str | None = None) -> None:
        if self.vocab is not None:
            return
        if self.skipped:
            rank_zero_info(f"bAbI {self.hparams.size}: skipping tasks {self.skipped} (skip_tasks): they are "
                           f"neither trained nor tested")
        size, root = self.hparams.size, self.hparams.root
        train_all = [ex for task in self.tasks for ex in load_babi(task, size, "train", root)]
        test = [ex for task in self.tasks for ex in load_babi(task, size, "test", root)]
        train, valid = split_validation(train_all, self.hparams.val_fraction, self.hparams.seed)
        self.vocab = Vocabulary.from_examples(train_all + test)
        words = max(len(sentence) for ex in train_all + test for sentence in (*ex.story, ex.question))
        memory = self.hparams.memory_size
        self.splits = {name: vectorize(examples, self.vocab, memory, words)
                       for name, examples in (("train", train), ("valid", valid), ("test", test))}
        rank_zero_info(f"bAbI {size} tasks {self.tasks}: {len(train)}/{len(valid)}/{len(test)} questions "
                       f"(train/val/test), vocabulary {len(self.vocab)}, memory {memory} x {words} words")

    @property
    def vocab_size(self) -> int:
        """Words including padding (the models' ``vocab_size`` must be at least this)."""
        if self.vocab is None:
            self.setup()
        return len(self.vocab)

    def _loader(self, name: str, shuffle: bool = False) -> DataLoader:
        data = self.splits[name]
        workers = {"num_workers": self.hparams.num_workers, "persistent_workers": self.hparams.num_workers > 0}
        if self.hparams.bucket_by_length and shuffle:
            lengths = data.stories.ne(0).any(-1).sum(-1)
            return DataLoader(TensorDataset(*data), batch_sampler=LengthBucketSampler(lengths, self.hparams.batch_size),
                              **workers)
        return DataLoader(TensorDataset(*data), batch_size=self.hparams.batch_size, shuffle=shuffle, **workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
