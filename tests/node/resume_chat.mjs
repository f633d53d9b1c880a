// useChat's resume (`useChat({ resume: true })` on a page that reloaded mid-answer), without
// React: the AI SDK's DefaultChatTransport.reconnectToStream asks GET /api/chat/<id>/stream (null
// on 204) and readUIMessageStream turns the replayed UI message stream into the message useChat
// would render. Prints {status, message, text, errors, thrown} as JSON, for tests/test_resume*.py.
//
//   node tests/node/resume_chat.mjs <base URL> <chat id>
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [base, chatId] = process.argv.slice(2);
const transport = new DefaultChatTransport({ api: `${base}/api/chat` });
const result = { status: null, message: null, text: null, errors: [], thrown: null };
try {
  const stream = await transport.reconnectToStream({ chatId, abortSignal: undefined });
  if (stream == null) {
    result.status = 204;
  } else {
    result.status = 200;
    for await (const message of readUIMessageStream({
      stream,
      onError: (error) => result.errors.push(error.message),
    })) {
      result.message = message;
    }
  }
} catch (error) {
  result.thrown = { name: error.name, message: error.message, status: error.statusCode ?? null };
}
const parts = result.message?.parts ?? [];
result.text = result.message ? parts.filter((p) => p.type === "text").map((p) => p.text).join("") : null;
console.log(JSON.stringify(result));
