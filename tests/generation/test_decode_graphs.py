"""The fixed-shape, graph-captured decode step: token identity with every runner on every task, no host sync in a
step (operator log), capture and capture-failure paths routed through a fake graph on the CPU, hooks per token."""

from __future__ import annotations

import contextlib
import logging

import pytest
import torch
from fake_graph import FakeGraph
from torch.utils._python_dispatch import TorchDispatchMode

from janus_r1 import Cancelled, Hooks
from janus_r1.generation import graphs
from janus_r1.generation.context import build, cfg_rows
from janus_r1.generation.decode import decode_image, decode_text
from janus_r1.generation.sampling import Sampling

PROMPTS = ["a red cat", "two green apples and a yellow banana on a wooden table"]


def _tokens(results) -> list:
    """Every sampled token of a task's results: image codes, reflection ids and their attention bits."""
    out = []
    for r in results:
        for a in getattr(r, "attempts", [r]):
            j = getattr(a, "judgement", a)
            out.append((getattr(a, "codes", None), getattr(j, "ids", None), getattr(j, "mask", None),
                        getattr(j, "verdict", None)))
    return out


TASKS = {
    "t2i": lambda m: m.text_to_image(PROMPTS, num_images=2, seed=3),
    "judge_forced_eos": lambda m: m.judge(m.text_to_image(PROMPTS[0], seed=2)[0].image, PROMPTS,
                                          max_reflection=8, seed=0),
    "introspect_all_no": lambda m: m.generate(PROMPTS, max_rounds=3, seed=5, max_reflection=6),
    "regenerate": lambda m: m.regenerate(m.text_to_image(PROMPTS[0], seed=1)[0].image, PROMPTS[0],
                                         critiques=["No. The cat is blue."], max_rounds=2, seed=4),
    "edit": lambda m: m.edit(m.text_to_image(PROMPTS[0], seed=1)[0].image, "make it blue", num_images=2, seed=2),
}
FORCE = {"judge_forced_eos": "EOS", "introspect_all_no": "No"}


@pytest.mark.parametrize("task", list(TASKS))
def test_graph_step_is_token_identical_to_every_runner(micro, monkeypatch, force_verdict, task):
    def run(runner: str):
        monkeypatch.setattr(micro.janus, "runner", runner)
        with force_verdict(FORCE[task], 1000.0) if task in FORCE else contextlib.nullcontext():
            return _tokens(TASKS[task](micro))

    eager = run("eager")
    for other in ("graph", "fixed", "dynamic", "static", "compiled"):
        assert run(other) == eager, other
    if task == "judge_forced_eos":  # verdict forced to Yes/No, then EOS at once: the early stop was exercised
        assert all(ids[1:] == [micro.vocab.ids.eos] for _, ids, _, _ in eager)
    if task == "introspect_all_no":
        assert all(v == "No" for *_, v in eager if v is not None) and len(eager) == 2 * 3


# --- no host sync inside a step --------------------------------------------------------------------------

SYNC_OPS = ("_local_scalar_dense", "item", "nonzero", "is_nonzero", "equal", "allclose", "lift_fresh",
            "masked_select", "unique", "_assert_async", "repeat_interleave.Tensor", "_unique2", "multinomial")


class OpLog(TorchDispatchMode):
    """Every ATen call: name, input shapes and devices (a cross-device copy shows as a device change)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        devices = {str(a.device) for a in flat} | ({str(kwargs["device"])} if kwargs.get("device") else set())
        self.ops.append((str(func), tuple(tuple(a.shape) for a in flat), tuple(sorted(devices))))
        return func(*args, **(kwargs or {}))


def _step_logs(monkeypatch) -> list[list[tuple]]:
    """Patch the fixed-shape step so each call is recorded in its own operator log."""
    logs: list[list[tuple]] = []
    original = graphs.Stepper._fixed

    def logged(self):
        with OpLog() as log:
            original(self)
        logs.append(log.ops)

    monkeypatch.setattr(graphs.Stepper, "_fixed", logged)
    return logs


def _assert_sync_free_and_identical(logs: list[list[tuple]]) -> None:
    assert len(logs) >= 3
    names = {op for log in logs for op, *_ in log}
    assert not [n for n in names if any(n == f"aten.{s}" or n.startswith(f"aten.{s}.") for s in SYNC_OPS)]
    assert not [op for log in logs for op in log if len(op[2]) > 1]  # nothing crosses devices
    assert all(log == logs[0] for log in logs[1:])  # the same kernels with the same shapes, step after step


def _image_ctx(micro, prompts):
    j = micro.janus
    rows = cfg_rows([[j.prompt_piece(j.prompt_ids(p))] for p in prompts], micro.vocab.ids.pad)
    return build(rows, micro.model.get_input_embeddings(), micro.vocab.ids.pad)


@pytest.mark.parametrize("sampling", [Sampling(top_k=8), Sampling(top_k=50, top_p=0.8, temperature=0.7),
                                      Sampling(greedy=True)])
def test_image_step_has_no_host_sync_and_the_same_operators_every_step(micro, monkeypatch, sampling):
    logs = _step_logs(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    decode_image(micro.model, _image_ctx(micro, PROMPTS), micro.num_image_tokens, 5.0, sampling, gen,
                 runner="graph")
    assert len(logs) == micro.num_image_tokens - 1
    _assert_sync_free_and_identical(logs)
    assert any("exponential_" in op for op, *_ in logs[0]) != sampling.greedy


def test_text_step_has_no_host_sync_and_the_same_operators_every_step(micro, monkeypatch):
    logs = _step_logs(monkeypatch)
    ids = micro.vocab.ids
    ctx = _image_ctx(micro, PROMPTS)  # any context with left padding (mask holes) will do
    never_eos = ids.eos + 1 if ids.eos + 1 < micro.model.config.text_config.vocab_size else ids.eos - 1
    out = decode_text(micro.model, ctx, 6, Sampling(top_k=50), torch.Generator().manual_seed(1), never_eos,
                      ids.pad, [ids.yes, ids.no], runner="graph")
    assert out.ids.shape == (ctx.embeds.shape[0], 6) and len(logs) == 5
    _assert_sync_free_and_identical(logs)


# --- capture, replay and capture failure, routed through a fake graph on the CPU ------------------------------



def _introspect(micro, monkeypatch, runner, hooks=None):
    monkeypatch.setattr(micro.janus, "runner", runner)
    return _tokens(micro.generate(PROMPTS, max_rounds=2, seed=9, max_reflection=6, hooks=hooks or Hooks()))


def test_captured_steps_replay_to_the_same_tokens(micro, monkeypatch, fake_capture):
    eager = _introspect(micro, monkeypatch, "eager")
    assert not fake_capture
    assert _introspect(micro, monkeypatch, "graph") == eager
    image = [g for g in fake_capture if g.replays == micro.num_image_tokens - 2]
    assert len(image) >= 2  # one capture per image phase, replayed for every step after the warm-up
    assert all(g.replays >= 1 for g in fake_capture)


def test_capture_failure_falls_back_with_the_same_tokens_and_one_log_line(micro, monkeypatch, caplog):
    expected = _introspect(micro, monkeypatch, "eager")

    def broken(fn, generator, device=None):
        if generator is not None:  # even a capture that drew from the generator must leave it untouched
            torch.empty(7).exponential_(1, generator=generator)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "can_capture", lambda device: True)
    monkeypatch.setattr(graphs, "capture", broken)
    monkeypatch.setattr(graphs, "TEXT_EAGER_STEPS", 1)  # let the short judge phase try a capture too
    monkeypatch.setattr(graphs, "MIN_STEPS_TO_CAPTURE", 1)
    failures = graphs.stats.failures
    with caplog.at_level(logging.WARNING, logger="janus_r1.generation.graphs"):
        assert _introspect(micro, monkeypatch, "graph") == expected
    phases = graphs.stats.failures - failures
    assert phases >= 3  # image, judge, image
    lines = [r for r in caplog.records if r.name == "janus_r1.generation.graphs"]
    assert len(lines) == phases and "operation not permitted" in lines[0].getMessage()


def test_progress_and_cancel_fire_per_token_through_captured_steps(micro, monkeypatch, fake_capture):
    monkeypatch.setattr(micro.janus, "runner", "graph")
    steps = []
    micro.text_to_image("a red cat", seed=1, hooks=Hooks(on_step=lambda e: steps.append((e.step, e.tokens.clone()))))
    assert [s for s, _ in steps] == list(range(1, micro.num_image_tokens + 1))
    assert all(t.shape == (1, s) and torch.equal(t, steps[-1][1][:, :s]) for s, t in steps)
    asked = {"n": 0}

    def cancel():
        asked["n"] += 1
        return asked["n"] > 9

    with pytest.raises(Cancelled):
        micro.text_to_image("a red cat", seed=1, hooks=Hooks(should_cancel=cancel))
    assert asked["n"] == 10
    assert micro.text_to_image("a red cat", seed=1)[0].attempts[0].codes == [int(x) for x in steps[-1][1][0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replay_equals_the_same_step_eager(micro):
    """On a GPU: the captured graph changes no token and leaves the generator where eager launches leave it."""
    model = micro.model.to("cuda")
    try:
        ctx = _image_ctx(micro, PROMPTS)
        runs = {}
        for runner in ("fixed", "graph"):
            gen = torch.Generator(device="cuda").manual_seed(0)
            codes = decode_image(model, ctx, micro.num_image_tokens, 5.0, Sampling(top_k=8), gen, runner=runner)
            runs[runner] = (codes.cpu(), gen.get_state())
        assert torch.equal(runs["fixed"][0], runs["graph"][0]) and torch.equal(runs["fixed"][1], runs["graph"][1])
    finally:
        micro.model.to("cpu")


# --- issue 15: refusal of empty graphs, torch versions, host-syncing layers, when to capture, pacing ------------

class EmptyGraph(FakeGraph):
    """A capture that recorded nothing: replay does nothing (what a capture on another device's stream gives)."""

    def replay(self) -> None:
        self.replays += 1


class RanDuringCapture(EmptyGraph):
    """The body's kernels ran at capture time, outside the graph (the cuda:1-under-cuda:0 failure)."""

    def __init__(self, fn, generator, device=None) -> None:
        super().__init__(fn, generator, device)
        fn()


@pytest.mark.parametrize("graph_cls, cause", [(EmptyGraph, "replay did not run the step"),
                                              (RanDuringCapture, "ran during capture")])
def test_empty_graph_is_refused_and_the_phase_decodes_eagerly(micro, monkeypatch, caplog, graph_cls, cause):
    expected = _introspect(micro, monkeypatch, "eager")
    FakeGraph.made = []
    monkeypatch.setattr(graphs, "can_capture", lambda device: True)
    monkeypatch.setattr(graphs, "capture", graph_cls)
    failures = graphs.stats.failures
    with caplog.at_level(logging.WARNING, logger="janus_r1.generation.graphs"):
        assert _introspect(micro, monkeypatch, "graph") == expected
    refused = graphs.stats.failures - failures
    assert refused >= 2 and refused == len(FakeGraph.made)  # every image phase tried once, refused once
    assert all(g.replays <= 1 for g in FakeGraph.made)  # never replayed after the refusal
    lines = [r.getMessage() for r in caplog.records if r.name == "janus_r1.generation.graphs"]
    assert len(lines) == refused and all(cause in m for m in lines), lines


class _Graph:
    def __init__(self, has_method: bool) -> None:
        self.registered = []
        if has_method:
            def register(gen):
                import warnings
                warnings.warn("register_generator_state is deprecated", FutureWarning, stacklevel=2)
                self.registered.append(gen)
            self.register_generator_state = register


def test_missing_register_generator_state_means_nothing_to_register():
    gen = torch.Generator()
    assert graphs.register_generator(_Graph(False), gen) is False  # torch without the method: no error, no fallback
    with_method = _Graph(True)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the deprecation warning of torch 2.14 is not surfaced
        assert graphs.register_generator(with_method, gen) is True
    assert with_method.registered == [gen]
    assert graphs.register_generator(_Graph(True), None) is False


def test_layers_that_sync_with_the_host_are_never_captured(micro, monkeypatch, fake_capture):
    class Linear8bitLt(torch.nn.Linear):  # bitsandbytes' class name
        pass

    class Fake:
        def __init__(self, lm, device_map=None) -> None:
            self.model = type("M", (), {"language_model": lm})()
            self.hf_device_map = device_map

    assert graphs.host_sync_reason(micro.model) is None
    assert "8-bit" in graphs.host_sync_reason(Fake(torch.nn.Sequential(Linear8bitLt(2, 2))))
    hooked = torch.nn.Linear(2, 2)
    hooked._hf_hook = object()
    assert "offloaded" in graphs.host_sync_reason(Fake(torch.nn.Sequential(hooked)))
    assert "offloaded" in graphs.host_sync_reason(Fake(torch.nn.Sequential(), {"": "cpu"}))
    expected = _introspect(micro, monkeypatch, "eager")
    monkeypatch.setattr(graphs, "host_sync_reason", lambda model: "bitsandbytes 8-bit layers")
    assert _introspect(micro, monkeypatch, "graph") == expected
    assert fake_capture == []  # not even tried


def _text(micro, max_new, hooks=None, never_eos=True):
    ids = micro.vocab.ids
    eos = ids.eos + 1 if never_eos else ids.eos
    return decode_text(micro.model, _image_ctx(micro, PROMPTS), max_new, Sampling(top_k=50),
                       torch.Generator().manual_seed(1), eos, ids.pad, None, hooks=hooks or Hooks(),
                       runner="graph")


def test_capture_only_when_enough_steps_remain(micro, monkeypatch, fake_capture, force_verdict):
    """A text phase captures after TEXT_EAGER_STEPS eager steps and only with MIN_STEPS_TO_CAPTURE steps left;
    a judgement that ends at once (forced EOS) never captures whatever its budget."""
    enough = graphs.TEXT_EAGER_STEPS + graphs.MIN_STEPS_TO_CAPTURE + 1  # steps = max_new - 1
    _text(micro, enough - 1)
    assert fake_capture == []
    _text(micro, enough)
    assert len(fake_capture) == 1 and fake_capture[0].replays == graphs.MIN_STEPS_TO_CAPTURE
    with force_verdict("EOS", 1000.0):
        out = _text(micro, 200, never_eos=False)
    assert out.ids.shape[1] == 1 and len(fake_capture) == 1


class FakeEvent:
    """Stands in for a CUDA event on the CPU: remembers when it was recorded and whether the host waited."""

    made: list = []

    def __init__(self, device) -> None:
        self.done = False
        FakeEvent.made.append(self)

    def synchronize(self) -> None:
        self.done = True


@pytest.mark.parametrize("runner", ["graph", "eager"])
def test_host_waits_on_the_event_recorded_k_steps_earlier(micro, monkeypatch, fake_capture, runner):
    FakeEvent.made = []
    monkeypatch.setattr(graphs, "can_pace", lambda device: True)
    monkeypatch.setattr(graphs, "new_event", FakeEvent)
    monkeypatch.setattr(micro.janus, "runner", runner)
    k, seen = graphs.PACE_STEPS, []

    def on_step(e):
        made = FakeEvent.made
        assert len(made) == e.step  # one event per sampled token, recorded before the hook sees it
        assert all(ev.done for ev in made[: max(0, e.step - k)])  # waited for everything k steps back
        assert not any(ev.done for ev in made[max(0, e.step - k):])  # and never more: the device is not starved
        seen.append(e.step)

    micro.text_to_image("a red cat", seed=1, hooks=Hooks(on_step=on_step))
    assert seen == list(range(1, micro.num_image_tokens + 1))
    FakeEvent.made = []
    micro.text_to_image("a red cat", seed=1)  # nobody watching: no pacing at all
    assert FakeEvent.made == []


# --- on a GPU (skipped without CUDA) ------------------------------------------------------------------------

def _on(micro, device, runner, hooks=None):
    model = micro.model.to(device)
    ctx = _image_ctx(micro, PROMPTS)
    gen = torch.Generator(device=device).manual_seed(0)
    codes = decode_image(model, ctx, micro.num_image_tokens, 5.0, Sampling(top_k=8), gen, runner=runner,
                         hooks=hooks or Hooks())
    return codes.cpu(), gen.get_state()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_graph_on_the_second_device_captures_and_matches(micro):
    """With the model on cuda:1 (not the current device) the graph records the step and replays it."""
    try:
        assert torch.cuda.current_device() == 0
        fixed = _on(micro, "cuda:1", "fixed")
        captures, failures = graphs.stats.captures, graphs.stats.failures
        graph = _on(micro, "cuda:1", "graph")
        assert graphs.stats.captures == captures + 1 and graphs.stats.failures == failures
        assert torch.equal(fixed[0], graph[0]) and torch.equal(fixed[1], graph[1])
    finally:
        micro.model.to("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_empty_graph_is_refused(micro, monkeypatch):
    def empty(fn, generator, device):  # a real CUDA graph that recorded nothing
        g = torch.cuda.CUDAGraph()
        with torch.cuda.device(device):
            s = torch.cuda.Stream(device=device)
            with torch.cuda.stream(s):
                g.capture_begin()
                g.capture_end()
        return g

    try:
        fixed = _on(micro, "cuda", "fixed")
        monkeypatch.setattr(graphs, "capture", empty)
        failures = graphs.stats.failures
        refused = _on(micro, "cuda", "graph")
        assert graphs.stats.failures == failures + 1
        assert torch.equal(fixed[0], refused[0]) and torch.equal(fixed[1], refused[1])
    finally:
        micro.model.to("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_host_stays_at_most_k_steps_ahead(micro, monkeypatch):
    events = []
    real = graphs.new_event
    monkeypatch.setattr(graphs, "new_event", lambda device: events.append(real(device)) or events[-1])
    k, behind = graphs.PACE_STEPS, []

    def on_step(e):
        behind.append(sum(not ev.query() for ev in events))  # steps queued but not finished

    try:
        fixed = _on(micro, "cuda", "fixed")
        paced = _on(micro, "cuda", "graph", Hooks(on_step=on_step))
        assert torch.equal(fixed[0], paced[0])
        assert len(events) == micro.num_image_tokens and max(behind) <= k
    finally:
        micro.model.to("cpu")


# --- capture on the model's device, one side stream per device, the torch version gate (fake CUDA on the CPU) ---

class _FakeCuda:
    """The few ``torch.cuda`` calls :func:`graphs.capture` makes, recording the current device at each."""

    def __init__(self, monkeypatch) -> None:
        self.current, self.registered_on, self.streams = 0, [], []
        fake = self

        class Stream:
            def __init__(self, device) -> None:
                self.device = device
                fake.streams.append(self)

            def wait_stream(self, other) -> None:
                pass

            def synchronize(self) -> None:
                pass

        class CUDAGraph:
            def register_generator_state(self, generator) -> None:
                fake.registered_on.append(fake.current)

            def capture_begin(self, capture_error_mode=None) -> None:
                pass

            def capture_end(self) -> None:
                pass

        @contextlib.contextmanager
        def device(d):
            before, fake.current = fake.current, torch.device(d).index
            try:
                yield
            finally:
                fake.current = before

        for name, value in {"Stream": Stream, "CUDAGraph": CUDAGraph, "device": device,
                            "current_stream": lambda d=None: Stream(d), "stream": lambda s: contextlib.nullcontext(),
                            "current_device": lambda: fake.current, "default_generators": ()}.items():
            monkeypatch.setattr(torch.cuda, name, value, raising=False)
        monkeypatch.setattr(graphs, "_STREAMS", {})

    def side_streams(self) -> list:
        return [s for s in self.streams if s in graphs._STREAMS.values()]


def test_capture_registers_the_generator_under_the_models_device_with_one_stream_per_device(monkeypatch):
    """Before torch 2.13 the graph-safe RNG seed/offset are allocated on the current device: registering outside
    ``torch.cuda.device(model's device)`` made a model on cuda:1 read its RNG state from cuda:0. And a new side
    stream per capture pinned a cuBLAS workspace per stream: one per device, reused."""
    fake = _FakeCuda(monkeypatch)
    gen, ran = torch.Generator(), []
    for dev in ("cuda:1", "cuda:1", "cuda:0", "cuda:1"):
        graphs.capture(lambda: ran.append(1), gen, torch.device(dev))
    assert fake.registered_on == [1, 1, 0, 1] and fake.current == 0 and len(ran) == 4
    assert set(graphs._STREAMS) == {torch.device("cuda", 0), torch.device("cuda", 1)}
    assert [s.device.index for s in fake.side_streams()] == [1, 0]  # made once per device
    assert graphs.side_stream(torch.device("cuda:1")) is graphs._STREAMS[torch.device("cuda", 1)]


def test_old_torch_never_captures_and_says_so_once(micro, monkeypatch, fake_capture, caplog):
    """On torch 2.4-2.12 a failed capture leaves the device's generators marked "capturing" (every later random
    draw raises): there the graph runner decodes with the eager static step, the same tokens, one warning."""
    def t2i(runner):
        monkeypatch.setattr(micro.janus, "runner", runner)
        return _tokens(micro.text_to_image(PROMPTS, seed=3))

    expected = t2i("eager")
    monkeypatch.setattr(graphs, "_WARNED", set())
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu121")
    with caplog.at_level(logging.WARNING, logger="janus_r1.generation.graphs"):
        assert t2i("graph") == expected and t2i("graph") == expected
    assert not fake_capture  # nothing was captured
    lines = [r.getMessage() for r in caplog.records if r.name == "janus_r1.generation.graphs"]
    assert len(lines) == 1 and "CUDA graphs are off: torch 2.11.0+cu121 is older than 2.13" in lines[0], lines
    assert graphs.GraphedStep(lambda: None, torch.device("cpu"), None).eager  # asked directly: refused too
    monkeypatch.setattr(torch, "__version__", "2.13.0")
    assert not graphs.GraphedStep(lambda: None, torch.device("cpu"), None).eager
    assert t2i("graph") == expected and fake_capture  # 2.13 on: captured


def test_pacing_events_block_instead_of_spinning(monkeypatch):
    made = []

    class Event:
        def __init__(self, **kwargs) -> None:
            made.append(kwargs)

        def record(self, stream) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    graphs.new_event(torch.device("cuda"))
    assert made == [{"blocking": True}]  # the host sleeps in synchronize(), not a busy-wait on a CPU core


def test_a_text_phase_reads_finished_every_k_tokens_with_the_same_result(micro, monkeypatch):
    """On CUDA "every row finished" is read back every TEXT_CHECK_EVERY tokens, not every token; the steps run
    past the end are PAD only and are cut, so ids, mask and length are those of a check per token."""
    from janus_r1.generation import decode

    assert decode.stop_check_every(torch.device("cuda", 1)) == decode.TEXT_CHECK_EVERY > 1
    assert decode.stop_check_every(torch.device("cpu")) == 1
    ids = micro.vocab.ids
    j = micro.janus
    ctx = build([[j.prompt_piece(j.prompt_ids(PROMPTS[1]))]], micro.model.get_input_embeddings(), ids.pad)
    calls = []
    hook = micro.model.lm_head.register_forward_hook(lambda *_: calls.append(1))

    def run(eos, every):
        monkeypatch.setattr(decode, "stop_check_every", lambda device: every)
        calls.clear()
        out = decode_text(micro.model, ctx, 40, Sampling(top_k=50), torch.Generator().manual_seed(3), eos, ids.pad,
                          runner="fixed")
        return out, len(calls)

    try:
        free = run(-1, 1)[0].ids[0].tolist()
        stop = next(i for i in range(5, len(free)) if free[i] not in free[:i] and (i + 1) % 4)
        (a, steps_a), (b, steps_b) = run(free[stop], 1), run(free[stop], 4)
    finally:
        hook.remove()
    assert a.ids.shape[1] == stop + 1 and torch.equal(a.ids, b.ids) and torch.equal(a.mask, b.mask)
    assert steps_a == stop + 1 and stop + 1 < steps_b < stop + 1 + 4  # a few PAD-only steps, cut from the result


def test_features_an_old_torch_lacks_are_warned_once(monkeypatch, caplog):
    """Unfused rms_norm on a GPU (torch < 2.8) and int4's slow reference kernel (no CPU int4 kernel before torch
    2.6): each said once, as a warning naming the torch that would have it."""
    from janus_r1.generation import oplog, runners
    from janus_r1.model import int4

    monkeypatch.setattr(graphs, "_WARNED", set())
    monkeypatch.setattr(runners, "rms_norm_fused", lambda: False)
    monkeypatch.setattr(int4, "_WARNED_OLD_TORCH", False)
    monkeypatch.setattr(int4, "has_op", lambda name: False)
    with caplog.at_level(logging.WARNING, logger="janus_r1"):  # an in-process `--quiet` CLI test raised it to ERROR
        assert not runners.warn_if_unfused_rms_norm(torch.device("cpu"))  # the CPU never had a fused kernel
        assert runners.warn_if_unfused_rms_norm(torch.device("cuda", 0))
        assert runners.warn_if_unfused_rms_norm(torch.device("cuda", 1))
        assert int4.fast_kernel(torch.device("cpu")) is None and int4.fast_kernel(torch.device("cpu")) is None
        assert int4.layer_kernel(torch.device("cpu"), 64, 64) == "reference"
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 2, lines
    assert "F.rms_norm runs unfused on this GPU" in lines[0] and "torch >= 2.8" in lines[0]
    assert "int4 on cpu runs the slow reference kernel" in lines[1] and "torch >= 2.6" in lines[1]
    monkeypatch.undo()
    assert oplog.rms_norm_is_one_kernel() == hasattr(torch.ops.aten, "_fused_rms_norm")
