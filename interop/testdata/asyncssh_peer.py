"""AsyncSSH as tokenlab's RFC 6187 peer (interop/ssh_test.go).

server PORT HOSTKEY HOSTCERT CA AUTHORIZED   serve until killed; answer every command with
                                             "asyncssh-ok user=NAME cmd=COMMAND"
client PORT USER KEY CERT CA HOSTALG CMD     connect asking for host key algorithm HOSTALG,
                                             authenticate with KEY/CERT, run CMD, print its
                                             output
Both log AsyncSSH's debug level 1 to stderr ("Verifying request with ALG key").
"""
import asyncio
import logging
import sys
import warnings

warnings.filterwarnings('ignore')
import asyncssh  # noqa: E402

logging.basicConfig(stream=sys.stderr, level=logging.DEBUG, format='%(name)s %(message)s')
asyncssh.set_debug_level(1)


async def handle(process):
    user = process.get_extra_info('username')
    process.stdout.write(f'asyncssh-ok user={user} cmd={process.command}\n')
    process.exit(0)


async def server(port, host_key, host_cert, ca, authorized):
    srv = await asyncssh.listen('127.0.0.1', int(port),
                                server_host_keys=[(host_key, host_cert)],
                                authorized_client_keys=authorized,
                                x509_trusted_certs=[ca], x509_purposes='any',
                                process_factory=handle)
    print('listening', flush=True)
    await srv.wait_closed()


async def client(port, user, key, cert, ca, host_alg, cmd):
    async with asyncssh.connect('127.0.0.1', int(port), username=user, known_hosts=None,
                                x509_trusted_certs=[ca], x509_purposes='any',
                                server_host_key_algs=[host_alg],
                                client_keys=[(key, cert)]) as conn:
        r = await conn.run(cmd, check=True)
        print(r.stdout, end='')


if __name__ == '__main__':
    mode, args = sys.argv[1], sys.argv[2:]
    asyncio.run(server(*args) if mode == 'server' else client(*args))
