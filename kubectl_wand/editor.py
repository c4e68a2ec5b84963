"""Ready-to-paste editor configurations for a debug server reachable on 127.0.0.1:PORT."""
from __future__ import annotations

import json


def vscode(name, port, local_root, remote_root):
    return {
        "name": name,
        "type": "debugpy",
        "request": "attach",
        "connect": {"host": "127.0.0.1", "port": port},
        "pathMappings": [{"localRoot": local_root, "remoteRoot": remote_root}],
        "justMyCode": False,
    }


def nvim_dap(name, port, local_root, remote_root):
    local = "vim.fn.getcwd()" if local_root == "${workspaceFolder}" else lua_string(local_root)
    return (
        "table.insert(require('dap').configurations.python, {\n"
        "  type = 'python', request = 'attach', name = %s,\n"
        "  connect = { host = '127.0.0.1', port = %d },\n"
        "  pathMappings = { { localRoot = %s, remoteRoot = %s } },\n"
        "  justMyCode = false,\n"
        "})\n" % (lua_string(name), port, local, lua_string(remote_root))
    )


def lua_string(value) -> str:
    """A Lua string literal of ``value``'s bytes (a path the target chose: its cwd), printable ASCII only.
    Not JSON: neovim's LuaJIT refuses JSON's \\uXXXX ("invalid escape sequence": the snippet did not load for a
    remoteRoot with any non-ASCII character). Decimal escapes are Lua 5.1's, and bytes (a path that is not
    UTF-8 arrives as surrogate escapes) are what the path is."""
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate outside the escapes: as Python would write it
        raw = value.encode("utf-8", "surrogatepass")
    return '"%s"' % "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else "\\%03d" % b for b in raw)


def configs(name, port, local_root, remote_root):
    return {"vscode": vscode(name, port, local_root, remote_root),
            "nvim_dap": nvim_dap(name, port, local_root, remote_root)}


def render(cfg):
    return ("VS Code (add to .vscode/launch.json \"configurations\"):\n%s\n\nnvim-dap (lua):\n%s" % (
        json.dumps(cfg["vscode"], indent=2), cfg["nvim_dap"]))


def render_many(cfgs, title):
    """Several targets at once: every configuration, a VS Code compound that starts them together, and the
    nvim-dap equivalent (nvim-dap has no compounds: a command that runs each configuration)."""
    names = [c["vscode"]["name"] for c in cfgs]
    launch = {"configurations": [c["vscode"] for c in cfgs],
              "compounds": [{"name": title, "configurations": names, "stopAll": False}]}
    lua = "".join(c["nvim_dap"] for c in cfgs)
    lua += ("vim.api.nvim_create_user_command(%s, function()\n"
            "  for _, c in ipairs(require('dap').configurations.python) do\n"
            "    if vim.tbl_contains(%s, c.name) then require('dap').run(c) end\n"
            "  end\n"
            "end, {})\n" % (lua_string("WandAttachAll"), "{" + ", ".join(lua_string(n) for n in names) + "}"))
    return ("VS Code (.vscode/launch.json; start the compound %s to attach to all of them):\n%s\n\n"
            "nvim-dap (lua; :WandAttachAll attaches to all of them):\n%s" % (json.dumps(title), json.dumps(
                launch, indent=2), lua))


def many(cfgs, title):
    names = [c["vscode"]["name"] for c in cfgs]
    return {"vscode": {"configurations": [c["vscode"] for c in cfgs],
                       "compounds": [{"name": title, "configurations": names, "stopAll": False}]},
            "nvim_dap": [c["nvim_dap"] for c in cfgs]}
