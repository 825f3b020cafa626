"""Distributed inference across edge nodes, on TVM's RPC tracker and server.

Board side (imports only ``edgevit.runtime``, ``tvm.runtime``/``tvm.rpc``, numpy): ``node`` (the agent),
``channel`` (bulk tensors beside RPC). Host side: ``client`` (tracker, sessions, timeouts), ``plan``
(nodes file, plan files, greedy placement), ``classsplit`` + ``planner`` (ED-ViT class-wise split with
pruning and fusion), ``pipeline`` (PipeEdge-style cuts by dynamic programming), ``infer`` (runners with
failover), ``cli`` (``edgevit tracker|node|nodes|plan|infer``), ``fashion`` (the dataset).

Trust boundary: TVM RPC has no authentication and no encryption, and whoever reaches a node's port can run
code on it. Use nodes on a trusted LAN or through an SSH tunnel (``ssh -L``). edgevit adds: nodes and the
tracker bind only the address they are given (default 127.0.0.1); a node loads an artifact only if the
uploaded file's sha256 equals the name the host asked for and every member matches the artifact's
metadata; each session's tensor channel takes one connection, which must present a random token.
"""
