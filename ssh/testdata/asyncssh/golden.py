# Regenerates the AsyncSSH golden RFC 6187 blobs and signatures: /usr/bin/python3 golden.py .
import asyncssh, warnings, sys, os
warnings.filterwarnings('ignore')
from asyncssh.public_key import SSHX509CertificateChain
out = sys.argv[1]
ca = asyncssh.generate_private_key('ecdsa-sha2-nistp384')
ca_cert = ca.generate_x509_ca_certificate(ca, 'CN=AsyncSSH CA', valid_before='+36500d')
open(os.path.join(out, 'ca.der'), 'wb').write(ca_cert.export_certificate('der'))
data = b'tokenlab RFC 6187 golden signature'
for name, alg, size, x509alg in [('p256','ecdsa-sha2-nistp256',None,b'x509v3-ecdsa-sha2-nistp256'),
                                  ('p384','ecdsa-sha2-nistp384',None,b'x509v3-ecdsa-sha2-nistp384'),
                                  ('rsa2048','ssh-rsa',2048,b'x509v3-rsa2048-sha256')]:
    k = asyncssh.generate_private_key(alg, key_size=size) if size else asyncssh.generate_private_key(alg)
    cert = ca.generate_x509_user_certificate(k, 'CN=asyncuser', issuer='CN=AsyncSSH CA', valid_before='+36500d')
    blob = SSHX509CertificateChain._public_data(x509alg, [cert, ca_cert], [])
    sig = k.sign(data, x509alg)
    open(os.path.join(out, name+'.blob'), 'wb').write(blob)
    open(os.path.join(out, name+'.sig'), 'wb').write(sig)
    print(name, len(blob), sig[:30])
