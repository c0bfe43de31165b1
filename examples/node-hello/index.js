// A minimal kl function in Node.js (CommonJS).
//
// `event` is the request body: a JSON body arrives parsed, so
//   curl -H 'content-type: application/json' -d '{"name":"Ada"}' ...
// greets Ada. `context` carries the request id, method, path, query, headers and more.
// Returning a plain object answers 200 with it as JSON.
exports.handler = async (event, context) => {
  const name = (event && event.name) || context.query.name || "world";
  return { message: `Hello, ${name}!`, requestId: context.requestId };
};
