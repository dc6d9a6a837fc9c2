// Reference for the older Hermes 2 Pro rule (lib/models/chat.py, parser "hermes-2-pro"): built by build_hermes.sh
#include "chat.h"
#include <nlohmann/json.hpp>
#include <fstream>
#include <iostream>
#include <sstream>
using json = nlohmann::ordered_json;
static std::string slurp(const char * p) { std::ifstream f(p, std::ios::binary); std::stringstream s; s << f.rdbuf(); return s.str(); }
int main(int argc, char ** argv) {
    auto tmpls = common_chat_templates_init(nullptr, slurp(argv[1]), "<|endoftext|>", "<|im_end|>");
    json req = json::parse(slurp(argv[2]));
    common_chat_templates_inputs in;
    in.messages = common_chat_msgs_parse_oaicompat(req.at("messages"));
    if (req.contains("tools")) in.tools = common_chat_tools_parse_oaicompat(req.at("tools"));
    in.use_jinja = true;
    in.add_generation_prompt = true;
    in.parallel_tool_calls = true;
    auto params = common_chat_templates_apply(tmpls.get(), in);
    std::string mode = argv[3];
    if (mode == "render") { std::cout << params.prompt; return 0; }
    common_chat_syntax syntax;
    syntax.format = params.format;
    syntax.parse_tool_calls = true;
    std::string text = slurp(argv[4]);
    try {
        auto msg = common_chat_parse(text, false, syntax);
        json out = {{"format", common_chat_format_name(params.format)}, {"content", msg.content}, {"tool_calls", json::array()}};
        for (auto & tc : msg.tool_calls) out["tool_calls"].push_back({{"name", tc.name}, {"arguments", tc.arguments}});
        std::cout << out.dump() << std::endl;
    } catch (const std::exception & e) {
        std::cout << json{{"error", e.what()}}.dump() << std::endl;
    }
    return 0;
}
