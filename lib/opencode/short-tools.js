// OpenCode plugin: send OpenCode's long built-in tool descriptions in short form (their first
// paragraph), so a small model's request is thousands of tokens shorter. The tools, their parameters
// and what they do are unchanged; only the text that describes them is.
//
// Reads short-tools.json beside this file (written by the pipeline's export stage when the agent
// sends short descriptions, export.tool_descriptions). It applies to every agent of the project while installed. With no usable file, or
// OPENCODE_SHORT_TOOLS=off, the descriptions stay as OpenCode writes them.
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const SERVICE = "short-tools"
const FORMAT = "opencode-prompt-learn/short-tools"

export const ShortTools = async (input) => {
  const client = input?.client
  const log = async (level, message) => {
    try {
      await client.app.log({ body: { service: SERVICE, level, message } })
    } catch {
      console.error(`${SERVICE}: ${message}`)
    }
  }
  if (process.env.OPENCODE_SHORT_TOOLS === "off") {
    await log("info", "short-tools: off (OPENCODE_SHORT_TOOLS=off), tool descriptions are left as they are")
    return {}
  }
  const path = fileURLToPath(new URL("./short-tools.json", import.meta.url))
  let short
  try {
    const data = JSON.parse(readFileSync(path, "utf8"))
    if (!data || data.format !== FORMAT || data.version !== 1 || typeof data.descriptions !== "object") {
      throw new Error(`not a ${FORMAT} v1 file`)
    }
    short = new Map(Object.entries(data.descriptions).filter(([, text]) => typeof text === "string" && text))
  } catch (err) {
    await log("warn", `short-tools: descriptions left as they are: cannot use ${path} (${err?.message ?? err}); re-export it with the pipeline's export stage (export.tool_descriptions: short)`)
    return {}
  }
  await log("info", `short-tools: short descriptions for ${[...short.keys()].join(", ")}`)
  return {
    "tool.definition": async (input, output) => {
      const text = short.get(input?.toolID)
      if (text !== undefined && output) output.description = text
    },
  }
}
