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
    local = "vim.fn.getcwd()" if local_root == "${workspaceFolder}" else json.dumps(local_root)
    return (
        "table.insert(require('dap').configurations.python, {\n"
        "  type = 'python', request = 'attach', name = %s,\n"
        "  connect = { host = '127.0.0.1', port = %d },\n"
        "  pathMappings = { { localRoot = %s, remoteRoot = %s } },\n"
        "  justMyCode = false,\n"
        "})\n" % (json.dumps(name), port, local, json.dumps(remote_root))
    )


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
            "end, {})\n" % (json.dumps("WandAttachAll"), "{" + ", ".join(json.dumps(n) for n in names) + "}"))
    return ("VS Code (.vscode/launch.json; start the compound %s to attach to all of them):\n%s\n\n"
            "nvim-dap (lua; :WandAttachAll attaches to all of them):\n%s" % (json.dumps(title), json.dumps(
                launch, indent=2), lua))


def many(cfgs, title):
    names = [c["vscode"]["name"] for c in cfgs]
    return {"vscode": {"configurations": [c["vscode"] for c in cfgs],
                       "compounds": [{"name": title, "configurations": names, "stopAll": False}]},
            "nvim_dap": [c["nvim_dap"] for c in cfgs]}
