"""Starts nginx on loopback ports it is handed already bound, so no other
process can take them between choosing and binding:

    python3 nginx_held.py TEMPLATE CONF NAME... -- NGINX ARGS...

binds one 127.0.0.1 port (port 0: the kernel picks) and listens on it
for each NAME, writes TEMPLATE to CONF with every @NAME@ replaced by its
port, prints NAME=PORT lines, then becomes nginx, which takes the
listening sockets over (the NGINX variable, as in nginx's binary
upgrade) instead of binding the ports itself.
"""

import os
import socket
import sys


def main():
    args = sys.argv[1:]
    split = args.index("--")
    template, conf, names = args[0], args[1], args[2:split]
    command = args[split + 1:]
    text = open(template).read()
    sockets = []
    for name in names:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(511)
        s.set_inheritable(True)
        sockets.append(s)
        port = s.getsockname()[1]
        text = text.replace("@%s@" % name, str(port))
        print("%s=%d" % (name, port), flush=True)
    with open(conf, "w") as f:
        f.write(text)
    env = dict(os.environ, NGINX="".join("%d;" % s.fileno() for s in sockets))
    os.execvpe(command[0], command, env)


main()
