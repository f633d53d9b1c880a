// A Next.js assistant front end's client side, as it reads our POST /chat/stream: openai-node's
// AssistantStream.fromReadableStream() over the response body, with the listeners such a front
// end registers. Prints what each listener saw, as JSON, for tests/test_front_ends.py.
//
//   node tests/node/assistant_stream.mjs <base URL> <message> [threadId]
import { AssistantStream } from "openai/lib/AssistantStream";

const [base, content, threadId] = process.argv.slice(2);
const response = await fetch(`${base}/chat/stream`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(threadId ? { content, threadId } : { content }),
});
const seen = {
  status: response.status,
  threadId: response.headers.get("x-thread-id"),
  contentType: response.headers.get("content-type"),
  text: "",
  textCreated: 0,
  textDeltas: [],
  toolCallsCreated: [],
  toolCallDeltas: [],
  toolCallsDone: [],
  messagesDone: [],
  events: [],
  runThreadIds: [],
  finalRun: null,
  error: null,
};
if (!response.ok) {
  seen.error = await response.json();
} else {
  const stream = AssistantStream.fromReadableStream(response.body);
  stream
    .on("textCreated", () => { seen.textCreated += 1; })
    .on("textDelta", (delta, snapshot) => { seen.textDeltas.push(delta.value); seen.text = snapshot.value; })
    .on("toolCallCreated", (call) => { seen.toolCallsCreated.push({ id: call.id, name: call.function?.name, arguments: call.function?.arguments }); })
    .on("toolCallDelta", (delta, snapshot) => { seen.toolCallDeltas.push({ id: snapshot.id, output: delta.function?.output }); })
    .on("toolCallDone", (call) => { seen.toolCallsDone.push({ id: call.id, output: call.function?.output ?? null }); })
    .on("messageDone", (message) => { seen.messagesDone.push(message.content.map((c) => c.text?.value ?? "").join("")); })
    .on("event", (event) => {
      seen.events.push(event.event);
      if (event.event.startsWith("thread.run.") && !event.event.startsWith("thread.run.step")) {
        seen.runThreadIds.push(event.data.thread_id);
      }
    });
  try {
    await stream.done();
    const run = stream.currentRun();
    seen.finalRun = run ? { status: run.status, last_error: run.last_error ?? null } : null;
  } catch (error) {
    seen.error = { name: error.name, message: error.message };
  }
}
console.log(JSON.stringify(seen));
