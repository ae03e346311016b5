"""A workflow changed in another notebook: the same workflow type as the agent's, different code
(tests/test_course_server.py). In a module of its own, as workflow code must be for Temporal's sandbox."""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent.workflow import AgentReply, ChatInput, DurableAgentWorkflow, Transcript


@workflow.defn(name="DurableAgentWorkflow")
class ChangedInAnotherNotebook(DurableAgentWorkflow):
    @workflow.init
    def __init__(self, input: ChatInput) -> None:
        super().__init__(input)

    @workflow.run
    async def run(self, input: ChatInput) -> Transcript:
        return await super().run(input)

    async def before_turn(self, text: str) -> AgentReply | None:
        return AgentReply("the other notebook's code answered")
