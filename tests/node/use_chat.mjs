// useChat's transport and message reader, without React: the AI SDK's DefaultChatTransport
// sends the hook's request to our POST /api/chat and readUIMessageStream turns the UI message
// stream into the message useChat would render. Prints the final message (and any error) as
// JSON, for tests/test_front_ends.py.
//
//   node tests/node/use_chat.mjs <base URL> <chat id> <message> [<earlier message>...]
//
// LAST_ONLY=1: the transport sends only the new message (the README's advice: the server keeps
// the history, and a long chat resent whole outgrows the 64 KiB request limit).
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [base, chatId, text, ...earlier] = process.argv.slice(2);
const user = (id, words) => ({ id, role: "user", parts: [{ type: "text", text: words }] });
const messages = [...earlier.map((words, i) => user(`u${i}`, words)), user("last", text)];
const lastOnly = process.env.LAST_ONLY === "1";
const transport = new DefaultChatTransport({
  api: `${base}/api/chat`,
  ...(lastOnly && {
    prepareSendMessagesRequest: ({ id, messages, trigger, messageId }) => ({
      body: { id, messages: messages.slice(-1), trigger, messageId },
    }),
  }),
});
const result = { message: null, errors: [], thrown: null };
try {
  const stream = await transport.sendMessages({
    trigger: "submit-message",
    chatId,
    messageId: undefined,
    messages,
    abortSignal: undefined,
  });
  for await (const message of readUIMessageStream({
    stream,
    onError: (error) => result.errors.push(error.message),
  })) {
    result.message = message;
  }
} catch (error) {
  result.thrown = { name: error.name, message: error.message, status: error.statusCode ?? null };
}
console.log(JSON.stringify(result));
