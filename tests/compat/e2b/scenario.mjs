// scenario.mjs - drives ForgeBox's E2B-compatible listener with the real,
// pinned E2B SDKs (package.json), exactly as agent code would: only the
// E2B_* environment variables point it here.  Run by
// tests/integration/test_e2b_compat.py: `node scenario.mjs NAME`; prints
// one JSON object of what it saw, which the test checks value by value.
import { Sandbox, CommandExitError, NotFoundError, AuthenticationError } from 'e2b'
import { Sandbox as CodeSandbox } from '@e2b/code-interpreter'

const errName = (e) => (e && e.constructor ? e.constructor.name : String(e))
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function lifecycle() {
  const out = {}
  const sbx = await Sandbox.create('base', {
    timeoutMs: 120_000, envs: { FROM_SANDBOX: 'sandbox-env' }, metadata: { purpose: 'e2b-compat' },
  })
  out.id = sbx.sandboxId
  const info = await sbx.getInfo()
  out.info = { templateId: info.templateId, metadata: info.metadata, state: info.state,
               lifetimeS: Math.round((info.endAt - info.startedAt) / 1000) }
  const listed = await Sandbox.list({ query: { metadata: { purpose: 'e2b-compat' } } }).nextItems()
  out.listed = listed.map((s) => s.sandboxId).includes(sbx.sandboxId)
  const notListed = await Sandbox.list({ query: { metadata: { purpose: 'nothing' } } }).nextItems()
  out.notListed = notListed.length
  await sbx.setTimeout(300_000)
  const info2 = await sbx.getInfo()
  out.lifetimeAfterSetTimeoutS = Math.round((info2.endAt - Date.now()) / 1000)

  // foreground, with streaming callbacks
  const chunks = { out: [], err: [] }
  const r = await sbx.commands.run('echo one; echo two >&2; echo three', {
    onStdout: (d) => chunks.out.push(d), onStderr: (d) => chunks.err.push(d),
  })
  out.run = { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr,
              streamedOut: chunks.out.join(''), streamedErr: chunks.err.join('') }
  // exit codes
  try {
    await sbx.commands.run('echo failing >&2; exit 7')
    out.exit = 'no error'
  } catch (e) {
    out.exit = { error: errName(e), isCommandExitError: e instanceof CommandExitError, exitCode: e.exitCode,
                 stderr: e.stderr }
  }
  // envs (the sandbox's and the command's) and cwd
  const envs = await sbx.commands.run('echo "$FROM_SANDBOX $FROM_COMMAND"; pwd', {
    envs: { FROM_COMMAND: 'command-env' }, cwd: '/tmp',
  })
  out.envs = envs.stdout
  // the sandbox's hardening holds for E2B commands too: an unprivileged
  // user, a read-only root
  out.identity = (await sbx.commands.run('id -u; touch /etc/forgebox-e2b 2>/dev/null || echo read-only')).stdout
  // background + list + kill
  const bg = await sbx.commands.run('echo started; sleep 300', { background: true })
  await sleep(300)
  const procs = await sbx.commands.list()
  out.bgListed = procs.some((p) => p.pid === bg.pid)
  out.bgKilled = await bg.kill()
  try {
    await bg.wait()
    out.bgWait = 'no error'
  } catch (e) {
    out.bgWait = { error: errName(e), exitCode: e.exitCode }
  }
  out.bgStdout = bg.stdout
  // connect to a running command from another handle, by pid
  const late = await sbx.commands.run('sleep 1; echo late', { background: true })
  const again = await sbx.commands.connect(late.pid)
  out.connected = { pid: again.pid === late.pid, stdout: (await again.wait()).stdout }
  const reconnected = await Sandbox.connect(sbx.sandboxId)
  out.reconnected = (await reconnected.commands.run('echo via connect')).stdout
  // stdin
  const cat = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(cat.pid, 'to stdin\n')
  await sbx.commands.closeStdin(cat.pid)
  out.stdin = (await cat.wait()).stdout

  // files
  await sbx.files.write('/home/user/notes/hello.txt', 'hello from e2b\n')
  out.read = await sbx.files.read('/home/user/notes/hello.txt')
  out.readViaCommand = (await sbx.commands.run('cat /workspace/notes/hello.txt')).stdout
  await sbx.files.write([{ path: 'a.txt', data: 'A' }, { path: 'b.bin', data: new Uint8Array([0, 1, 255]) }])
  out.bytes = Array.from(await sbx.files.read('b.bin', { format: 'bytes' }))
  const written = await sbx.files.write('/home/user/deep/er/octets.txt', 'as octets', { useOctetStream: true })
  out.octets = { path: written.path, name: written.name, data: await sbx.files.read('deep/er/octets.txt') }
  out.madeDir = await sbx.files.makeDir('/home/user/newdir')
  out.madeDirAgain = await sbx.files.makeDir('/home/user/newdir')
  const entries = await sbx.files.list('/home/user')
  out.list = entries.map((e) => `${e.name}:${e.type}`).sort()
  const fi = await sbx.files.getInfo('b.bin')
  out.getInfo = { name: fi.name, type: fi.type, size: fi.size, path: fi.path }
  out.existsBefore = await sbx.files.exists('a.txt')
  await sbx.files.remove('a.txt')
  out.existsAfter = await sbx.files.exists('a.txt')
  await sbx.files.rename('/home/user/notes/hello.txt', '/home/user/moved.txt')
  out.moved = await sbx.files.read('/home/user/moved.txt')
  try {
    await sbx.files.read('/home/user/absent.txt')
    out.readAbsent = 'no error'
  } catch (e) {
    out.readAbsent = errName(e)
  }

  out.running = await sbx.isRunning()
  await sbx.kill()
  out.runningAfterKill = await sbx.isRunning()
  out.killAgain = await Sandbox.kill(sbx.sandboxId)
  return out
}

async function code() {
  const out = {}
  const sbx = await CodeSandbox.create({ envs: { FROM_SANDBOX: 'sandbox-env' } })
  out.id = sbx.sandboxId
  const env = await sbx.runCode('import os\n(os.environ["FROM_SANDBOX"], os.environ.get("PER_RUN"))',
                                { envs: { PER_RUN: 'run-env' } })
  out.env = env.text
  out.envAfter = (await sbx.runCode('os.environ.get("PER_RUN")')).text ?? null
  const first = await sbx.runCode('x = 41\nprint("side", "effect")\nx + 1')
  out.first = { text: first.text, stdout: first.logs.stdout, stderr: first.logs.stderr,
                error: first.error ? first.error.name : null, count: first.executionCount }
  const streamed = []
  const second = await sbx.runCode('import sys\nprint("kept", x)\nsys.stderr.write("warn\\n")\nx',
                                   { onStdout: (m) => streamed.push(m.line) })
  out.second = { text: second.text, stdout: second.logs.stdout, stderr: second.logs.stderr,
                 streamed, count: second.executionCount }
  const bad = await sbx.runCode('def f():\n    return 1 / 0\nf()')
  out.error = { name: bad.error.name, value: bad.error.value, traceback: bad.error.traceback, text: bad.text ?? null }
  const after = await sbx.runCode('x')
  out.afterError = after.text
  // a quiet run longer than the keepalive interval: the keepalive lines
  // between output lines are skipped by the SDK
  const slow = await sbx.runCode('import time\nprint("before")\ntime.sleep(6)\nprint("after")\n"slept"')
  out.slow = { text: slow.text, stdout: slow.logs.stdout }
  const ctx = await sbx.createCodeContext()
  const other = await sbx.runCode('y = 5\ny', { context: ctx })
  out.otherContext = other.text
  const missing = await sbx.runCode("'x' in globals()", { context: ctx })
  out.otherContextSeesX = missing.text
  await sbx.kill()
  return out
}

async function wrongkey() {
  try {
    await Sandbox.create('base')
    return { error: 'none' }
  } catch (e) {
    return { error: errName(e), isAuth: e instanceof AuthenticationError }
  }
}

async function otherteam() {
  const id = process.env.OTHER_SANDBOX_ID
  const out = {}
  try {
    await Sandbox.getInfo(id)
    out.getInfo = 'no error'
  } catch (e) {
    out.getInfo = errName(e)
    out.getInfoIsNotFound = e instanceof NotFoundError
  }
  out.kill = await Sandbox.kill(id)
  try {
    await Sandbox.connect(id)
    out.connect = 'no error'
  } catch (e) {
    out.connect = errName(e)
  }
  return out
}

async function create() {
  const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
  return { id: sbx.sandboxId }
}

const scenarios = { lifecycle, code, wrongkey, otherteam, create }
const name = process.argv[2]
try {
  const result = await scenarios[name]()
  process.stdout.write(JSON.stringify(result) + '\n')
} catch (e) {
  process.stdout.write(JSON.stringify({ fatal: errName(e), message: String(e && e.message), stack: String(e && e.stack) }) + '\n')
  process.exitCode = 1
}
