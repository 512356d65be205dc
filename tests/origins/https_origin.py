"""An HTTPS origin made of Python's standard library: http.server wrapped in
TLS, as people really run it. It answers HTTP/1.0 and closes each
connection without a TLS close_notify, the way Python's ssl module does.

    python3 https_origin.py CERT.pem KEY.pem

prints the port it listens on (127.0.0.1), then serves until killed:

- /length/N   N bytes with a Content-Length
- /chunked/N  N bytes, Transfer-Encoding: chunked (an HTTP/1.1 answer)
- /close/N    N bytes with no length: the body ends when the connection does

Every body is the path, a newline, then N bytes of a repeating pattern, so
the caller can check it arrived whole.
"""

import http.server
import ssl
import sys


def body(path, n):
    head = (path + "\n").encode()
    pattern = b"0123456789abcdef"
    return head + (pattern * (n // len(pattern) + 1))[:n]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        parts = self.path.split("/")
        kind = parts[1] if len(parts) > 1 else ""
        try:
            n = int(parts[2]) if len(parts) > 2 else 0
        except ValueError:
            n = 0
        data = body(self.path, n)
        if kind == "length":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif kind == "chunked":
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(0, len(data), 4096):
                chunk = data[i : i + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        elif kind == "close":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


def main():
    cert, key = sys.argv[1], sys.argv[2]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
