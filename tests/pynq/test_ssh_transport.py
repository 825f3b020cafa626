"""SSHTransport's command lines, with stand-in ``ssh``/``scp`` executables on PATH (there is no sshd here).

The stand-ins log their arguments, refuse any host but one, and execute locally in a directory standing in for
the board's home: ``edgevit flash`` then runs its real SSH code path end to end on the simulated device.
"""

import os

from edgevit import cli

FAKE_SSH = """#!/usr/bin/env bash
echo "ssh $*" >> "$FAKE_SSH_LOG"
while [ $# -gt 0 ]; do case "$1" in -o|-p) shift 2;; -*) shift;; *) break;; esac; done
host=$1; shift
[ "$host" = "$FAKE_SSH_HOST" ] || { echo "ssh: Could not resolve hostname ${host#*@}: Name or service not known" >&2; exit 255; }
cd "$FAKE_SSH_HOME" && exec bash -c "$*"
"""

FAKE_SCP = """#!/usr/bin/env bash
echo "scp $*" >> "$FAKE_SSH_LOG"
args=(); while [ $# -gt 0 ]; do case "$1" in -o|-P) shift 2;; -r|-q|--) shift;; *) args+=("$1"); shift;; esac; done
host=${args[1]%%:*}; path=${args[1]#*:}
[ "$host" = "$FAKE_SSH_HOST" ] || exit 255
cp -r "${args[0]}" "$FAKE_SSH_HOME/$path"
"""


def test_flash_over_the_ssh_code_path(tiny_bundle, sim_lib, pynq_python, tmp_path, monkeypatch, capsys):
    bin_dir, home, log = tmp_path / "bin", tmp_path / "home", tmp_path / "ssh.log"
    bin_dir.mkdir()
    home.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("scp", FAKE_SCP)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_HOME", str(home))
    monkeypatch.setenv("FAKE_SSH_HOST", "xilinx@pynq")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("EDGEVIT_PYNQ_SIM_LIB", str(sim_lib))
    code = cli.main(["flash", str(tiny_bundle), "--board", "pynq-z2", "--host", "xilinx@pynq", "--port", "2222",
                     "--remote-python", pynq_python, "--count", "5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "5 inputs, 0 output words differ" in out
    calls = log.read_text().splitlines()
    opts = "-o BatchMode=yes -o ConnectTimeout=10"
    assert calls[0] == f"ssh {opts} -p 2222 -- xilinx@pynq true"
    assert calls[1] == (f"ssh {opts} -p 2222 -- xilinx@pynq rm -rf edgevit-bundles/{tiny_bundle.name} && "
                        f"mkdir -p edgevit-bundles")
    assert calls[2].startswith(f"scp {opts} -r -q -P 2222 -- ") and calls[2].endswith(" xilinx@pynq:edgevit-bundles/")
    assert calls[3] == (f"ssh {opts} -p 2222 -- xilinx@pynq cd edgevit-bundles/{tiny_bundle.name} && {pynq_python} "
                        f"-m edgevit.pynq.selftest . --timeout 10.0 --count 5")
    assert (home / "edgevit-bundles" / tiny_bundle.name / "edgevit" / "pynq" / "driver.py").is_file()
    code = cli.main(["flash", str(tiny_bundle), "--board", "pynq-z2", "--host", "xilinx@elsewhere"])
    err = capsys.readouterr().err.strip()
    assert code == 9 and err == ("edgevit: error: board xilinx@elsewhere is unreachable over ssh: ssh: Could not "
                                 "resolve hostname elsewhere: Name or service not known")
