// OpenCode plugin: before each model call, add the learned worked examples nearest to the
// current task (BM25 over the task text and the steps taken so far) to the system prompt.
//
// Reads nearest-demos.json beside this file (written by the pipeline's export stage, format
// `plugin`). Scoring mirrors lib/program/retrieval.py exactly: same tokens, the bank's own idf and
// length norms, query terms in sorted order, ties to the earlier bank entry. With no usable
// bank, or OPENCODE_NEAREST_DEMOS=off, it adds nothing and OpenCode runs with the plain prompt.
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const SERVICE = "nearest-demos"
const BANK_FORMAT = "opencode-prompt-learn/demo-bank"
const WORD = /[A-Za-z0-9]+/g
const CAMEL = /([a-z0-9])([A-Z])/g

function tokenize(text) {
  const out = []
  for (const word of String(text ?? "").match(WORD) ?? []) {
    for (const part of word.replace(CAMEL, "$1 $2").split(" ")) {
      if (part.length > 1) out.push(part.toLowerCase())
    }
  }
  return out
}

// Parse and check a bank; throws an Error saying what is wrong. Builds postings for fast scoring.
function parseBank(text) {
  const bank = JSON.parse(text)
  if (!bank || bank.format !== BANK_FORMAT || bank.version !== 1) throw new Error(`not a ${BANK_FORMAT} v1 file`)
  const { terms, idf, demos } = bank
  if (!Array.isArray(terms) || !Array.isArray(idf) || terms.length !== idf.length) throw new Error("terms/idf missing or of different lengths")
  if (!Array.isArray(demos) || !Number.isInteger(bank.k) || bank.k < 1 || typeof bank.k1 !== "number") throw new Error("demos, k or k1 missing")
  if (!Array.isArray(bank.fields) || !bank.fields.every((f) => f === "task" || f === "steps_so_far")) throw new Error("fields must be task / steps_so_far")
  const termIndex = new Map(terms.map((t, i) => [t, i]))
  const postings = terms.map(() => [])
  demos.forEach((d, di) => {
    if (typeof d.text !== "string" || typeof d.norm !== "number" || !Array.isArray(d.tf)) throw new Error(`demo ${di} is incomplete`)
    for (let j = 0; j + 1 < d.tf.length; j += 2) {
      const ti = d.tf[j]
      if (!(ti >= 0 && ti < terms.length)) throw new Error(`demo ${di} names an unknown term`)
      postings[ti].push(di, d.tf[j + 1])
    }
  })
  return { ...bank, termIndex, postings }
}

function loadBank(path) {
  return parseBank(readFileSync(path, "utf8"))
}

// BM25 score of every demo; summed over the query's distinct terms in sorted order.
function scores(bank, query) {
  const out = new Float64Array(bank.demos.length)
  const k1p = bank.k1 + 1
  const terms = [...new Set(tokenize(query))].sort()
  for (const t of terms) {
    const ti = bank.termIndex.get(t)
    if (ti === undefined) continue
    const idf = bank.idf[ti]
    const post = bank.postings[ti]
    for (let j = 0; j < post.length; j += 2) {
      const di = post[j]
      const f = post[j + 1]
      out[di] += idf * f * k1p / (f + bank.demos[di].norm)
    }
  }
  return out
}

function topK(bank, query, k) {
  const s = scores(bank, query)
  const order = Array.from(s.keys())
  order.sort((a, b) => (s[b] - s[a]) || (a - b))
  return order.slice(0, k)
}

function cut(text, limit) {
  return text.length <= limit ? text : text.slice(0, limit - 1) + "…"
}

function cutFront(text, limit) {
  return text.length <= limit ? text : "…" + text.slice(text.length - limit + 1)
}

// Paths under the project become relative, as they are in the bank.
function relativize(text, dir) {
  if (!dir) return text
  return text.split(dir + "/").join("").split(dir).join(".")
}

// The steps already taken in this turn, rendered as the training rows render them.
function stepsText(bank, toolParts) {
  const lines = toolParts.map((p, i) => {
    const input = p.state?.input ?? {}
    const keys = bank.key_args?.[p.tool]
    const shown = keys ? Object.fromEntries(keys.filter((k) => k in input).map((k) => [k, input[k]])) : input
    const outcome = p.state?.status === "error" ? "error" : "ok"
    const raw = p.state?.status === "error" ? p.state?.error : p.state?.output
    const result = cut(String(raw ?? "").split(/\s+/).filter(Boolean).join(" "), bank.result_chars ?? 120)
    return `${i + 1}. ${p.tool} ${JSON.stringify(shown)} -> ${outcome}` + (result ? `: ${result}` : "")
  })
  return cutFront(lines.join("\n"), bank.field_chars ?? 1200)
}

// The query for the latest user turn: its text, and the tool calls made since it.
function turnQuery(bank, messages, dir) {
  let last = -1
  for (let i = messages.length - 1; i >= 0; i--) {
    if (messages[i]?.info?.role === "user") { last = i; break }
  }
  if (last < 0) return null
  const user = messages[last]
  const task = (user.parts ?? []).filter((p) => p.type === "text" && !p.synthetic).map((p) => p.text).join("\n")
  const tools = messages.slice(last + 1).flatMap((m) => (m.parts ?? []).filter((p) => p.type === "tool" && p.state?.status !== "pending" && p.state?.status !== "running"))
  const fields = { task: cut(task, bank.field_chars ?? 1200), steps_so_far: stepsText(bank, tools) }
  return { sessionID: user.info.sessionID, text: relativize(bank.fields.map((f) => fields[f]).join("\n"), dir) }
}

// The header, then the picked demos nearest last (next to the turn, as the Python side orders them).
function render(bank, picks) {
  return [bank.header, ...[...picks].reverse().map((i) => bank.demos[i].text)].join("\n\n")
}

export const NearestDemos = async (input) => {
  const client = input?.client
  const dir = input?.directory ?? input?.worktree ?? ""
  const log = async (level, message) => {
    try {
      await client.app.log({ body: { service: SERVICE, level, message } })
    } catch {
      console.error(`${SERVICE}: ${message}`)
    }
  }
  if (process.env.OPENCODE_NEAREST_DEMOS === "off") {
    await log("info", "nearest-demos: off (OPENCODE_NEAREST_DEMOS=off), no examples are added")
    return {}
  }
  const path = fileURLToPath(new URL("./nearest-demos.json", import.meta.url))
  let bank
  try {
    bank = loadBank(path)
  } catch (err) {
    await log("warn", `nearest-demos: no examples added, the agent keeps its plain prompt: cannot use ${path} (${err?.message ?? err}); re-export it with the pipeline's export stage (format plugin)`)
    return {}
  }
  await log("info", `nearest-demos: loaded ${bank.demos.length} examples from ${path} (k=${bank.k}, fields ${bank.fields.join("+")})`)
  const chosen = new Map() // session id -> system text for its current turn
  return {
    "experimental.chat.messages.transform": async (_input, output) => {
      try {
        const q = turnQuery(bank, output?.messages ?? [], dir)
        if (q && bank.demos.length) {
          chosen.delete(q.sessionID)
          chosen.set(q.sessionID, render(bank, topK(bank, q.text, bank.k)))
          if (chosen.size > 256) chosen.delete(chosen.keys().next().value) // a long-running server: keep recent sessions
        }
      } catch (err) {
        await log("warn", `nearest-demos: no examples for this call: ${err?.message ?? err}`)
      }
    },
    "experimental.chat.system.transform": async (input, output) => {
      const text = input?.sessionID ? chosen.get(input.sessionID) : undefined
      if (text && Array.isArray(output?.system)) output.system.push(text)
    },
  }
}

// For the pipeline's tests and benchmark (not a plugin entry: OpenCode calls exported functions only).
NearestDemos.core = { tokenize, parseBank, loadBank, scores, topK, turnQuery, render }
