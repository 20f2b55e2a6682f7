// client.mjs - drives ForgeBox's MCP server with the real, pinned
// @modelcontextprotocol/sdk client (tests/integration/test_mcp.py).
//
//   node client.mjs http URL KEY  < steps.json
//   node client.mjs stdio FORGEBOX_BIN URL KEY < steps.json
//
// steps.json is a list of {op: "listTools"} | {op: "callTool", name,
// arguments} | {op: "ping"} | {op: "terminate"}; the output (stdout) is one
// JSON document: {connect: {...}, steps: [{ok: result} | {error: {name,
// code, message}}]}.  A failed connect is reported, not thrown, so the
// test can assert on it.  Right after connecting it lists the tools once,
// so that the SDK validates every structuredContent against the tool's
// outputSchema, as a real agent's client does.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [mode, ...rest] = process.argv.slice(2);

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return JSON.parse(Buffer.concat(chunks).toString("utf8") || "[]");
}

function errorOf(e) {
  return { name: e?.constructor?.name ?? "Error", code: e?.code ?? null, message: String(e?.message ?? e) };
}

const steps = await readStdin();
let transport;
if (mode === "http") {
  const [url, key] = rest;
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  transport = new StreamableHTTPClientTransport(new URL(url + "/mcp"), { requestInit: { headers } });
} else {
  const [bin, url, key] = rest;
  transport = new StdioClientTransport({
    command: bin,
    args: ["mcp"],
    env: { FORGEBOX_URL: url, FORGEBOX_API_KEY: key, PATH: process.env.PATH ?? "/usr/bin:/bin" },
    stderr: "inherit",
  });
}
const client = new Client({ name: "forgebox-test", version: "1.0.0" });
const out = { connect: null, steps: [] };
try {
  await client.connect(transport);
  out.connect = {
    ok: true,
    server: client.getServerVersion(),
    capabilities: client.getServerCapabilities(),
    protocolVersion: transport.protocolVersion ?? null,
    sessionId: transport.sessionId ?? null,
    instructions: client.getInstructions() ?? null,
    tools: (await client.listTools()).tools.length,
  };
} catch (e) {
  out.connect = { ok: false, error: errorOf(e) };
  process.stdout.write(JSON.stringify(out));
  process.exit(0);
}
for (const s of steps) {
  try {
    let r;
    if (s.op === "listTools") r = await client.listTools();
    else if (s.op === "callTool") r = await client.callTool({ name: s.name, arguments: s.arguments ?? {} });
    else if (s.op === "ping") r = await client.ping();
    else if (s.op === "terminate") r = { terminated: (await transport.terminateSession(), true) };
    else throw new Error(`unknown op ${s.op}`);
    out.steps.push({ ok: r });
  } catch (e) {
    out.steps.push({ error: errorOf(e) });
  }
}
await client.close();
process.stdout.write(JSON.stringify(out));
