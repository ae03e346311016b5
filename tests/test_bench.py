"""The benchmark runs on the real embedded server and its figures hang together (never timing bounds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from temporalio.client import WorkflowFailureError

from durable_agent import llm
from durable_agent.config import OFFLINE_MODEL, Settings
from durable_course.bench import (
    PHASES, TURNS, BenchError, BenchReport, models_to_measure, plain_turn, run_benchmark,
)
import warm_run
from fake_openai import FakeOpenAI, completion
from durable_agent.session import start_chat
from durable_agent.workflow import ChatInput

LOOPS = ("plain", "durable", "local-model")


@pytest.fixture(scope="module")
async def report(temporal) -> BenchReport:
    # The offline model only, even when LLM_MODEL names a real one: tests never call a paid API.
    return await run_benchmark(temporal.client, iterations=3, warmup=1, loops=LOOPS, models=[llm.LLMConfig()])


def test_every_series_is_measured_and_summarised(report):
    assert [(s.loop, s.tools) for s in report.series] == [(loop, n) for loop in LOOPS for n in TURNS]
    for s in report.series:
        st = s.stats
        assert st.n == len(s.samples_ms) == 3
        assert st.min <= st.p50 <= st.p95 <= st.max and st.min <= st.mean <= st.max and st.std >= 0
        assert (st.min, st.max) == (min(s.samples_ms), max(s.samples_ms))
        assert s.cpu_ms > 0


def test_counts_match_the_turns(report):
    for s in report.series:
        # The offline model needs exactly this many tool calls, and one model call more to answer.
        assert (s.tool_calls, s.model_calls, s.steps) == (s.tools, s.tools + 1, 2 * s.tools + 1)
    for n in TURNS:
        durable, local = report.get("durable", OFFLINE_MODEL, n), report.get("local-model", OFFLINE_MODEL, n)
        # Read from the event history: every step is an activity; with the local option the model calls
        # are local activities (markers) and only the tools are activities.
        assert (durable.activities, durable.local_activities) == (2 * n + 1, 0)
        assert (local.activities, local.local_activities) == (n, n + 1)


def test_overheads_are_computed_from_the_series(report):
    # Which loop is faster is what the benchmark measures, not something to assert on three samples of a
    # busy machine; what must hold is that each figure is computed from the series it names.
    model = llm.LLMConfig().model
    assert len(report.overheads) == len(report.series) - len(TURNS)
    for o in report.overheads:
        loop, plain = report.get(o.loop, model, o.tools), report.get("plain", model, o.tools)
        assert o.per_turn_ms == pytest.approx(loop.stats.p50 - plain.stats.p50)
        assert o.per_step_ms == pytest.approx(o.per_turn_ms / loop.steps)
        assert o.ratio_to_plain == pytest.approx(loop.stats.p50 / plain.stats.p50)
        assert o.ratio_to_model == pytest.approx(o.per_turn_ms / plain.model_ms.p50)
    for s in report.series:
        if s.loop == "plain":
            assert s.model_ms.max <= s.stats.max  # the model's time is part of the turn's time
            assert not s.phases_ms
        else:
            # The phases come from the server's history, the latency from the client's clock: the phases of
            # a turn happen one after another inside it.
            assert set(s.phases_ms) == set(PHASES) and all(v >= 0 for v in s.phases_ms.values())
            assert sum(s.phases_ms.values()) <= s.stats.mean + 1.0


def test_json_round_trips_and_the_table_names_everything(report):
    text = report.to_json()
    assert BenchReport.from_json(text) == report
    data = json.loads(text)
    assert {"iterations", "warmup", "loops", "models", "series", "overheads", "environment"} <= set(data)
    assert set(data["series"][0]["stats"]) == {"n", "mean", "std", "p50", "p95", "min", "max"}
    assert {"per_turn_ms", "per_step_ms", "ratio_to_plain", "ratio_to_model"} <= set(data["overheads"][0])
    table = report.table()
    for word in (*LOOPS, "p95", "ms/step", "x model", "activity run"):
        assert word in table


async def test_the_plain_loop_is_the_same_agent(chat):
    messages = []
    for text in TURNS.values():
        plain = await plain_turn(messages, text, llm.LLMConfig())
        durable = await chat.send(text)
        assert (plain.text, plain.tools_used) == (durable.text, durable.tools_used)
    assert [m.to_openai() for m in messages] == [m.to_openai() for m in await chat.history()]


async def test_bad_options_are_refused_before_anything_starts():
    with pytest.raises(BenchError, match="iterations must be at least 1"):
        await run_benchmark(iterations=0)
    with pytest.raises(BenchError, match="unknown loop.*choose from plain, durable"):
        await run_benchmark(loops=("plain", "turbo"))


async def test_an_unknown_model_call_fails_the_chat_with_a_clear_error(temporal, task_queue, worker):
    chat = await start_chat(temporal.client, task_queue=task_queue, input=ChatInput(model_call="telepathy"))
    with pytest.raises(WorkflowFailureError) as failure:
        await chat.handle.result()
    assert "model_call must be one of activity, local_activity, not 'telepathy'" in str(failure.value.cause)


def test_the_command_prints_json_or_a_clear_error():
    command = [sys.executable, "-m", "durable_course", "bench", "--iterations", "1", "--warmup", "0",
               "--loops", "plain,durable", "--model-latency", "5", "--json"]
    offline = {**os.environ, "LLM_MODEL": ""}  # "" means the offline model, whatever .env says
    done = warm_run.run(command, timeout=120, env=offline)  # forked from the suite's warm starter
    assert done.returncode == 0, done.stderr
    report = BenchReport.from_json(done.stdout)
    models = [OFFLINE_MODEL, OFFLINE_MODEL + "+5ms"]  # the instant offline model, and the one that takes its time
    assert report.models == models
    assert [(s.model, s.loop, s.stats.n) for s in report.series] == [
        (model, loop, 1) for model in models for loop in ("plain", "durable") for _ in TURNS]
    data = json.loads(done.stdout)  # what a machine reads: the designs in one line, the reference table
    assert [(d["model"], d["loop"]) for d in data["designs"]] == [(model, "durable") for model in models]
    assert [(r["model"], r["tools"]) for r in data["reference"]] == [(model, n) for model in models for n in TURNS]
    assert "measuring: durable loop" in done.stderr
    bad = subprocess.run(command[:5] + ["0"], capture_output=True, text=True, timeout=60, env=offline)
    assert bad.returncode == 2 and bad.stdout == "" and "iterations must be at least 1" in bad.stderr


def test_a_real_model_is_measured_only_when_configured():
    assert [c.model for c in models_to_measure(Settings())] == [OFFLINE_MODEL]
    real = Settings(llm_model="openai/gpt-4o-mini", llm_api_base="http://127.0.0.1:9/v1")
    assert [(c.model, c.api_base) for c in models_to_measure(real)] == [
        (OFFLINE_MODEL, None), ("openai/gpt-4o-mini", "http://127.0.0.1:9/v1")]


async def test_a_real_provider_is_measured_and_its_key_stays_out(temporal, monkeypatch):
    secret = "sk-test-SECRET-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    fake = FakeOpenAI([completion("Hello from the provider.") for _ in range(4)])
    try:
        report = await run_benchmark(temporal.client, iterations=2, warmup=0, loops=("plain", "durable"),
                                     models=[llm.LLMConfig("openai/fake-model", fake.base_url, 10)], tool_counts=(0,))
    finally:
        fake.close()
    assert len(fake.requests) == 4  # two plain turns, two durable turns: one model call each
    assert report.models == ["openai/fake-model"] and len(report.overheads) == 1
    durable = report.get("durable", "openai/fake-model", 0)
    assert durable.activities == 1
    assert sum(durable.phases_ms.values()) <= durable.stats.mean + 1.0  # no warm-up: the chat's start is left out
    assert secret not in report.to_json() and secret not in report.table()


async def test_a_failing_model_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-0123456789abcdef")
    fake = FakeOpenAI()  # no scripted reply: every request gets a 500
    try:
        with pytest.raises(BenchError, match="the plain loop failed with openai/fake-model") as failure:
            await run_benchmark(loops=("plain",), iterations=1, warmup=0, tool_counts=(0,),
                                models=[llm.LLMConfig("openai/fake-model", fake.base_url, 10)])
    finally:
        fake.close()
    assert "sk-test-SECRET" not in str(failure.value)


async def test_every_variant_runs_a_turn_with_the_same_steps(temporal):
    variants = ("unsandboxed", "default-converter", "no-eager", "no-cache")
    report = await run_benchmark(temporal.client, iterations=1, warmup=0, loops=variants, tool_counts=(1,),
                                 models=[llm.LLMConfig()])
    assert [(s.loop, s.tool_calls, s.activities, s.local_activities) for s in report.series] == [
        (loop, 1, 3, 0) for loop in variants]
    assert report.overheads == []  # no plain loop measured: nothing to compare with


# --- what #14 added: a model with latency, the designs in one line, the reference table, Temporal's default ---

def test_designs_and_the_reference_table_come_from_the_series(report):
    model = llm.LLMConfig().model
    designs = {d["loop"]: d for d in report.designs()}
    assert set(designs) == {"durable", "local-model"}
    for loop, design in designs.items():
        chosen = [o for o in report.overheads if o.loop == loop]
        assert design["ratio_to_plain"] == pytest.approx(sorted(o.ratio_to_plain for o in chosen)[1])  # the median of 3
        assert design["per_step_ms"] == pytest.approx(sorted(o.per_step_ms for o in chosen)[1])
        assert set(design["by_tools"]) == {str(n) for n in TURNS}
    rows = report.reference()
    assert [(r["model"], r["tools"]) for r in rows] == [(model, n) for n in TURNS]
    for r in rows:
        durable, plain = report.get("durable", model, r["tools"]), report.get("plain", model, r["tools"])
        assert (r["turns"], r["mean"], r["std"], r["min"], r["max"]) == (
            3, durable.stats.mean, durable.stats.std, durable.stats.min, durable.stats.max)
        assert r["plain_mean"] == plain.stats.mean
    data = json.loads(report.to_json())
    assert data["designs"] == json.loads(json.dumps(report.designs()))
    assert data["reference"] == json.loads(json.dumps(report.reference()))
    table = report.table()
    assert "reference implementation's table" in table and "Each design in one line" in table


async def test_a_model_with_latency_is_measured_under_its_own_name(temporal):
    slow = llm.LLMConfig(latency_ms=40)
    assert slow.label == "offline/durable-agent+40ms" and llm.LLMConfig().label == OFFLINE_MODEL
    assert [c.label for c in models_to_measure(Settings(), latency_ms=200)] == [OFFLINE_MODEL, OFFLINE_MODEL + "+200ms"]
    report = await run_benchmark(temporal.client, iterations=2, warmup=0, loops=("plain", "durable"), models=[slow],
                                 tool_counts=(1,))
    assert report.models == ["offline/durable-agent+40ms"]
    assert [(s.loop, s.model) for s in report.series] == [("plain", slow.label), ("durable", slow.label)]
    plain = report.get("plain", slow.label, 1)
    assert plain.model_ms.min >= 2 * 40  # two model calls per turn, each made to wait its latency
    assert report.get("durable", slow.label, 1).activities == 3


async def test_the_default_and_all_cpus_server_loops_run_on_servers_of_their_own():
    from durable_agent.server import EMBEDDED_SERVER_CPUS, TRANSFER_READS_PER_SECOND, dev_server_flags
    from durable_course.bench import DEFAULT_SERVER_CONFIG, OWN_SERVER

    assert f"history.transferProcessorMaxPollRPS={TRANSFER_READS_PER_SECOND}" in dev_server_flags()
    flags = dev_server_flags(DEFAULT_SERVER_CONFIG)
    assert "history.transferProcessorMaxPollRPS=20" in flags and len(flags) == len(dev_server_flags())
    loops = ("plain", "durable", "default-server", "all-cpus-server")
    report = await run_benchmark(iterations=1, warmup=0, loops=loops, models=[llm.LLMConfig()], tool_counts=(0,))
    assert [s.loop for s in report.series] == list(loops)
    for s in report.series[1:]:
        # The bench started the three servers, so it read their CPU time; the turn ran as the course's agent.
        assert s.server_cpu_ms is not None and s.server_cpu_ms > 0 and s.activities == 1
    assert [o.loop for o in report.overheads] == list(loops[1:])
    assert OWN_SERVER["all-cpus-server"] == {"cpus": None} and EMBEDDED_SERVER_CPUS == 1


async def test_server_settings_need_the_benchmarks_own_server(temporal):
    with pytest.raises(BenchError, match="server settings apply to the server the benchmark starts"):
        await run_benchmark(temporal.client, loops=("durable",), server_config={"history.transferProcessorMaxPollRPS": 5})


def test_the_command_refuses_bad_server_settings_and_latencies():
    base = [sys.executable, "-m", "durable_course", "bench", "--iterations", "1", "--loops", "plain"]
    for extra, message in ((["--server-config", "novalue"], "--server-config takes KEY=VALUE"),
                           (["--model-latency", "-5"], "--model-latency must be 0 or more")):
        done = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stdout == "" and message in done.stderr, done.stderr
