// Package ssh is tokenlab's SSH server and client for keys held on a token: plain keys and
// RFC 6187 X.509 certificate keys (x509v3-ecdsa-sha2-nistp256/384/521, x509v3-rsa2048-sha256).
//
// Layering. golang.org/x/crypto/ssh (gossh) is the base wherever it can do the job: it
// supplies every signer (gossh.NewSignerFromSigner over a crypto.Signer from the middleware),
// key parsing, authorized_keys and known_hosts, and plain signature verification. It cannot
// parse an x509v3-* key blob (golang/go#24266), which rules it out in two places only:
//
//   - a server verifying RFC 6187 user keys: gossh.ServerConn rejects the publickey request
//     before any callback runs. tokenlab's Server therefore runs on its own stack, for plain
//     and certificate keys alike so that there is one server, not two: ssh/internal/transport
//     (RFC 4253), user authentication here (RFC 4252, server.go), and
//     ssh/internal/connection (RFC 4254 channels) for exec and shell sessions.
//   - a client verifying an RFC 6187 host key: gossh parses the host key before the
//     HostKeyCallback. With ClientConfig.HostCAs the Client runs on that same own stack;
//     with a HostKeyCallback (plain host keys) it is a gossh client.
//
// The signing sides need nothing of their own: an X509Signer is a gossh.MultiAlgorithmSigner
// whose key type is the x509v3 name and whose Marshal is the RFC 6187 blob, so a gossh client
// offers it as a user key (and a gossh server could present it as a host key; tests check
// both).
package ssh
