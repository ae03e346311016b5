"""Class mode (durable_course/classroom.py): two learners with different code on one real Temporal server."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client

from durable_agent.session import open_chat, start_chat
from durable_agent.worker import start_worker
from durable_course.classroom import Classroom, LearnerGuard, NotYourChat, create_namespaces, learner_name
from other_notebook import ChangedInAnotherNotebook


def test_who_the_learner_is():
    assert learner_name({"JUPYTERHUB_USER": "Ada.Lovelace@uni.edu"}) == "ada_lovelace_uni_edu"
    assert learner_name({"DURABLE_COURSE_LEARNER": "bob"}) == "bob"
    assert learner_name({"JUPYTERHUB_USER": "ada", "DURABLE_COURSE_LEARNER": "bob"}) == "ada"  # the hub decides
    assert learner_name({}) is None and learner_name({"DURABLE_COURSE_LEARNER": " ./ "}) is None


def test_a_learners_names_are_theirs_and_nobody_elses():
    guard = LearnerGuard("bob")
    assert guard.own("chat-1a2b") == "bob.chat-1a2b" and guard.own("bob.chat-1a2b") == "bob.chat-1a2b"
    with pytest.raises(NotYourChat, match="'ada.chat-1a2b' belongs to ada, not to you \\(bob\\)"):
        guard.own("ada.chat-1a2b")
    with pytest.raises(ValueError):
        LearnerGuard("a.b")


@pytest.fixture
async def two_learners(temporal):
    ada = await Client.connect(temporal.address, plugins=[Classroom("ada")])
    bob = await Client.connect(temporal.address, plugins=[Classroom("bob")])
    # Both name the same task queue and run the same workflow type, as two learners of one notebook do; bob's
    # workflow code is changed (it answers without the model).
    workers = [await start_worker(ada, task_queue="course-04_chat"),
               await start_worker(bob, task_queue="course-04_chat", workflows=[ChangedInAnotherNotebook])]
    yield ada, bob
    for worker in workers:
        await worker.stop()


async def test_two_learners_on_one_server_never_cross_in_a_hundred_turns(two_learners):
    ada, bob = two_learners
    ada_chat = await start_chat(ada, task_queue="course-04_chat")
    bob_chat = await start_chat(bob, task_queue="course-04_chat")
    assert ada_chat.workflow_id.startswith("ada.chat-") and bob_chat.workflow_id.startswith("bob.chat-")

    async def ada_turns() -> list[str]:
        return [(await ada_chat.send(f"What is {n} + 1?")).text for n in range(50)]

    async def bob_turns() -> list[str]:
        return [(await bob_chat.send(f"What is {n} + 2?")).text for n in range(50)]

    ada_replies, bob_replies = await asyncio.gather(ada_turns(), bob_turns())
    assert ada_replies == [f"{n} + 1 = {n + 1}." for n in range(50)]
    assert bob_replies == ["the other notebook's code answered"] * 50
    for client, chat in ((ada, ada_chat), (bob, bob_chat)):
        described = await client.get_workflow_handle(chat.workflow_id).describe()
        assert described.task_queue == f"{chat.workflow_id.split('.')[0]}.course-04_chat"


async def test_a_learner_cannot_reach_another_learners_chats(two_learners):
    ada, bob = two_learners
    ada_chat = await start_chat(ada, task_queue="course-04_chat")
    await ada_chat.send("What is 6 * 7?")
    stolen = open_chat(bob, ada_chat.workflow_id)
    for attempt in (stolen.history(), stolen.status(), stolen.send("Tell me your secrets"), stolen.end(),
                    bob.get_workflow_handle(ada_chat.workflow_id).describe(),
                    bob.get_workflow_handle(ada_chat.workflow_id).fetch_history(),
                    bob.get_workflow_handle(ada_chat.workflow_id).terminate(),
                    start_chat(bob, ada_chat.workflow_id.replace("chat-", "chat-new-"))):
        with pytest.raises(NotYourChat, match="belongs to ada, not to you \\(bob\\)"):
            await attempt
    # Bob's list shows his chats only; Ada's chat is untouched and still answers her.
    await start_chat(bob, task_queue="course-04_chat")
    listed = [w.id async for w in bob.list_workflows()]
    assert listed and all(i.startswith("bob.") for i in listed)
    assert (await ada_chat.send("And 6 * 8?")).text == "6 * 8 = 48."
    # A plain name in Bob's client is Bob's: it can never name Ada's chat.
    assert open_chat(bob, ada_chat.workflow_id.split(".", 1)[1]).workflow_id == ada_chat.workflow_id.split(".", 1)[1]


async def test_the_teacher_creates_a_namespace_per_learner(temporal, task_queue):
    names = await create_namespaces(temporal.client, ["Ada", "bob"])
    assert names == ["course-ada", "course-bob"]
    assert await create_namespaces(temporal.client, ["ada"]) == ["course-ada"]  # again: nothing changes
    client = await Client.connect(temporal.address, namespace="course-ada")
    worker = await start_worker(client, task_queue=task_queue)
    try:
        chat = await start_chat(client, task_queue=task_queue)
        assert (await chat.send("What is 2 + 2?")).text == "2 + 2 = 4."
        with pytest.raises(Exception):  # another namespace does not know the chat
            await open_chat(await Client.connect(temporal.address, namespace="course-bob"), chat.workflow_id).history()
    finally:
        await worker.stop()


@pytest.mark.slow
def test_the_class_load_command_simulates_learners_on_one_server():
    import json
    import subprocess
    import sys

    import warm_run

    done = warm_run.run([sys.executable, "-m", "durable_course", "class-load", "--learners", "3", "--turns", "2",
                         "--json"], timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["learners"], report["answered"], report["wrong"], report["lost"], report["crossed"]) == (3, 6, 0, 0, 0)
    assert len(report["worker_rss_mb"]) == 3 and all(mb > 20 for mb in report["worker_rss_mb"])
    assert report["server_rss_mb"] > 20 and report["p95_ms"] >= report["p50_ms"] > 0


async def test_a_learners_lab_on_the_class_server_keeps_to_their_chats(tmp_path, monkeypatch):
    from course_server_process import CourseServer
    from durable_course import lab as lab_module
    from durable_course.lab import start_lab

    server = CourseServer(tmp_path / "class.db")
    server.start()
    try:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("JPY_SESSION_NAME", "notebooks/04_chat.ipynb")
        monkeypatch.setenv("JUPYTERHUB_USER", "ada")
        ada = await start_lab()
        chat = await ada.new_chat()
        assert chat.workflow_id.startswith("ada.chat-")
        assert (await ada.ask(chat, "What is 25 + 17?")).text == "25 + 17 = 42."
        described = await ada.client.get_workflow_handle(chat.workflow_id).describe()
        assert described.task_queue == "ada.course-04_chat"
        lab_module._current = None  # Bob's kernel
        monkeypatch.setenv("JUPYTERHUB_USER", "bob")
        bob = await start_lab(worker=False)
        with pytest.raises(NotYourChat):
            await open_chat(bob.client, chat.workflow_id).history()
        await bob.stop()
        await ada.stop()
    finally:
        server.stop()
