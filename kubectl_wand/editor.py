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
