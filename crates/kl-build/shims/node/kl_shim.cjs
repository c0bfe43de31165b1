// kl Node.js shim: loads the user's handler (KL_HANDLER = "file.export") from KL_CODE_DIR,
// then serves HTTP/1.1 on the unix socket KL_SOCKET or on TCP $PORT (default 8080).
// Each request body becomes `event`, the handler's result becomes the response, exactly as
// described in shims/CONTRACT.md. Stdlib only; run as `node kl_shim.cjs` with cwd = code dir.
"use strict";

const fs = require("fs");
const http = require("http");
const path = require("path");
const { pathToFileURL } = require("url");

const MAX_BODY_BYTES = 64 * 1024 * 1024;
const KEEP_ALIVE_MS = 65_000;
const EXIT_LOAD_FAILED = 3;
const OCTET_STREAM = "application/octet-stream";
const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
let shuttingDown = false;

// ---------------------------------------------------------------------------------------------
// Handler loading

function parseHandlerSpec(spec) {
  const dot = spec.lastIndexOf(".");
  if (dot <= 0 || dot === spec.length - 1) {
    throw new Error(`KL_HANDLER must look like "file.export", got "${spec}"`);
  }
  return { file: spec.slice(0, dot), exportName: spec.slice(dot + 1) };
}

function resolveHandlerFile(codeDir, file) {
  const base = path.resolve(codeDir, file);
  for (const ext of [".js", ".mjs", ".cjs"]) {
    const candidate = base + ext;
    if (fs.statSync(candidate, { throwIfNoEntry: false })?.isFile()) return candidate;
  }
  throw new Error(`handler file not found: ${base}.js, .mjs or .cjs`);
}

// The "type" field of the nearest package.json, as Node itself decides for a .js file.
function nearestPackageType(dir) {
  for (;;) {
    const pkgPath = path.join(dir, "package.json");
    if (fs.existsSync(pkgPath)) return JSON.parse(fs.readFileSync(pkgPath, "utf8")).type;
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

function isEsm(file) {
  if (file.endsWith(".mjs")) return true;
  return file.endsWith(".js") && nearestPackageType(path.dirname(file)) === "module";
}

async function loadHandler(spec, codeDir) {
  const { file, exportName } = parseHandlerSpec(spec);
  const resolved = resolveHandlerFile(codeDir, file);
  const mod = isEsm(resolved) ? await import(pathToFileURL(resolved).href) : require(resolved);
  const fn = mod[exportName] ?? mod.default?.[exportName];
  if (typeof fn !== "function") {
    throw new TypeError(`${resolved} does not export a function named "${exportName}"`);
  }
  return fn;
}

// ---------------------------------------------------------------------------------------------
// Request → event and context

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"]);
    if (declared > MAX_BODY_BYTES) {
      reject(new HttpError(413, "PayloadTooLarge", `body exceeds ${MAX_BODY_BYTES} bytes`));
      return;
    }
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners("data");
        reject(new HttpError(413, "PayloadTooLarge", `body exceeds ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks, size)));
    req.on("error", reject);
  });
}

// The lower-cased media type without parameters; undefined when absent or empty.
function mediaType(headers) {
  const value = headers["content-type"]?.split(";")[0].trim().toLowerCase();
  return value || undefined;
}

function isValidUtf8(buf) {
  try {
    utf8Strict.decode(buf);
    return true;
  } catch {
    return false;
  }
}

function decodeEvent(body, type) {
  if (body.length === 0) return null;
  if (type === "application/json" || type?.endsWith("+json")) {
    try {
      return JSON.parse(body.toString("utf8"));
    } catch (err) {
      throw new HttpError(400, "InvalidJSON", err.message);
    }
  }
  const isText = type?.startsWith("text/") || type === "application/x-www-form-urlencoded";
  if (isText || (type === undefined && isValidUtf8(body))) return body.toString("utf8");
  return body;
}

function firstValues(searchParams) {
  const map = {};
  for (const [key, value] of searchParams) {
    if (!Object.hasOwn(map, key)) map[key] = value;
  }
  return map;
}

function flatHeaders(headers) {
  const map = {};
  for (const [name, value] of Object.entries(headers)) {
    map[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return map;
}

// Binary mode percent-encodes attribute values (space, '"', '%', non-ASCII).
function percentDecoded(value) {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function cloudEventAttributes(headers) {
  const entries = Object.entries(headers).filter(([name]) => name.startsWith("ce-"));
  if (entries.length === 0) return null;
  return Object.fromEntries(entries.map(([name, value]) => [name.slice(3), percentDecoded(value)]));
}

function buildContext(req) {
  const headers = flatHeaders(req.headers);
  const url = req.url;
  const queryAt = url.indexOf("?");
  const deadline = headers["x-kl-deadline-ms"];
  const deadlineMs = /^\d+$/.test(deadline ?? "") ? Number(deadline) : null;
  return {
    requestId: headers["x-kl-request-id"] ?? null,
    functionName: process.env.KL_FUNCTION ?? null,
    revision: process.env.KL_REVISION ?? null,
    tenant: process.env.KL_TENANT ?? null,
    deadlineMs,
    method: req.method,
    path: queryAt === -1 ? url : url.slice(0, queryAt),
    query: firstValues(new URLSearchParams(queryAt === -1 ? "" : url.slice(queryAt + 1))),
    headers,
    cloudEvent: cloudEventAttributes(headers),
    // No deadline means no limit; Infinity keeps `remaining < n` comparisons correct.
    getRemainingTimeInMillis: () =>
      deadlineMs === null ? Infinity : Math.max(0, deadlineMs - Date.now()),
  };
}

// ---------------------------------------------------------------------------------------------
// Result → response ({ status, headers, body: Buffer })

function toJson(value) {
  return Buffer.from(JSON.stringify(value === undefined ? null : value) ?? "null", "utf8");
}

function jsonResponse(status, value) {
  return { status, headers: { "content-type": "application/json" }, body: toJson(value) };
}

function errorResponse(status, code, message, type) {
  const error = type === undefined ? { code, message } : { code, message, type };
  return jsonResponse(status, { error });
}

function isResponseObject(result) {
  return (
    result !== null &&
    typeof result === "object" &&
    !Array.isArray(result) &&
    !(result instanceof Uint8Array) &&
    typeof result.statusCode === "number"
  );
}

// Framing headers belong to the shim, not to the handler.
const RESERVED_HEADERS = new Set(["content-length", "transfer-encoding", "connection"]);

function responseHeaders(headers) {
  if (headers === undefined || headers === null) return {};
  if (typeof headers !== "object" || Array.isArray(headers)) {
    throw new TypeError(`headers must be an object, got ${typeof headers}`);
  }
  const out = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (value === undefined || value === null || RESERVED_HEADERS.has(lower)) continue;
    const values = Array.isArray(value) ? value.map(String) : String(value);
    http.validateHeaderName(lower);
    http.validateHeaderValue(lower, values);
    out[lower] = values;
  }
  return out;
}

// The body of a { statusCode, headers, body, isBase64Encoded } result with its default type.
function encodeBody(result) {
  const { body } = result;
  if (body === undefined || body === null) return { body: Buffer.alloc(0) };
  if (typeof body === "string") {
    return result.isBase64Encoded === true
      ? { body: Buffer.from(body, "base64"), type: OCTET_STREAM }
      : { body: Buffer.from(body, "utf8"), type: "text/plain; charset=utf-8" };
  }
  if (body instanceof Uint8Array) return { body: Buffer.from(body), type: OCTET_STREAM };
  return { body: toJson(body), type: "application/json" };
}

function mapResult(result) {
  if (isResponseObject(result)) {
    const status = result.statusCode;
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      throw new RangeError(`statusCode must be an integer from 200 to 599, got ${status}`);
    }
    const headers = responseHeaders(result.headers);
    // 204 and 304 responses never have a body; keep Content-Length truthful.
    const noBody = status === 204 || status === 304;
    const { body, type } = noBody ? { body: Buffer.alloc(0) } : encodeBody(result);
    if (type !== undefined && headers["content-type"] === undefined) headers["content-type"] = type;
    return { status, headers, body };
  }
  if (result instanceof Uint8Array) {
    return { status: 200, headers: { "content-type": OCTET_STREAM }, body: Buffer.from(result) };
  }
  return jsonResponse(200, result);
}

function errorType(err) {
  const name = typeof err?.name === "string" ? err.name : "";
  const ctor = err?.constructor?.name ?? "";
  return (name && name !== "Error" ? name : ctor || name) || "Error";
}

function errorMessage(err) {
  return err instanceof Error ? err.message : String(err);
}

function logError(what, err) {
  process.stderr.write(`kl: ${what}: ${err?.stack ?? String(err)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Server

function send(res, { status, headers, body }) {
  // While draining, in-flight responses close their connection so the server can finish.
  if (shuttingDown) res.shouldKeepAlive = false;
  res.writeHead(status, http.STATUS_CODES[status], { ...headers, "content-length": body.length });
  res.end(body);
}

async function invoke(handler, req) {
  let event;
  try {
    event = decodeEvent(await readBody(req), mediaType(req.headers));
  } catch (err) {
    if (!(err instanceof HttpError)) throw err;
    const response = errorResponse(err.status, err.code, err.message);
    // An unread oversized body cannot be skipped: the connection is not reusable.
    if (err.status === 413) response.headers.connection = "close";
    return response;
  }
  const context = buildContext(req);
  let result;
  try {
    result = await handler(event, context);
  } catch (err) {
    logError(`handler failed (request ${context.requestId ?? "-"})`, err);
    return errorResponse(500, "FunctionError", errorMessage(err), errorType(err));
  }
  try {
    return mapResult(result);
  } catch (err) {
    logError(`cannot encode result (request ${context.requestId ?? "-"})`, err);
    return errorResponse(500, "SerializationError", errorMessage(err), errorType(err));
  }
}

function requestListener(handler) {
  return (req, res) => {
    if (req.method === "GET" && req.url === "/healthz") {
      send(res, jsonResponse(200, { status: "ok" }));
      return;
    }
    invoke(handler, req)
      .then((response) => send(res, response))
      .catch((err) => {
        logError("request failed", err);
        if (!res.headersSent) send(res, errorResponse(500, "InternalError", errorMessage(err)));
        else res.destroy();
      });
  };
}

function listen(server) {
  const socketPath = process.env.KL_SOCKET;
  if (socketPath) {
    fs.rmSync(socketPath, { force: true });
    server.listen(socketPath);
  } else {
    server.listen(Number(process.env.PORT || 8080), "0.0.0.0");
  }
}

function exitOnFatal() {
  process.on("uncaughtException", (err) => {
    logError("uncaught exception", err);
    process.exit(1);
  });
  process.on("unhandledRejection", (reason) => {
    logError("unhandled promise rejection", reason);
    process.exit(1);
  });
}

function exitOnSignals(server) {
  const shutdown = () => {
    shuttingDown = true;
    server.close(() => process.exit(0)); // also closes idle keep-alive connections
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

async function main() {
  const spec = process.env.KL_HANDLER || "index.handler";
  const codeDir = process.env.KL_CODE_DIR || process.cwd();
  let handler;
  try {
    handler = await loadHandler(spec, codeDir);
  } catch (err) {
    logError(`cannot load handler "${spec}" from ${codeDir}`, err);
    process.exit(EXIT_LOAD_FAILED);
  }
  exitOnFatal();
  // The gateway may talk HTTP/1.1 over a unix socket without a Host header.
  const server = http.createServer({ requireHostHeader: false }, requestListener(handler));
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1_000;
  server.on("error", (err) => {
    logError("server error", err);
    process.exit(1);
  });
  exitOnSignals(server);
  listen(server);
}

main();
