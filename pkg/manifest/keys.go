package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Key and signature files are one line each: a label, a space, standard
// base64 of the raw bytes, LF.
const (
	publicLabel    = "imgcast-ed25519-public"
	privateLabel   = "imgcast-ed25519-private"
	signatureLabel = "imgcast-ed25519-signature"

	// BuiltinKeyPath is where `make initramfs PUBKEY=NAME.pub` puts the
	// public key in the boot image.
	BuiltinKeyPath = "/etc/imgcast/image.pub"
)

// ErrSignature: the manifest's signature does not verify with the key.
var ErrSignature = errors.New("manifest signature does not verify")

func encodeLine(label string, b []byte) []byte {
	return []byte(label + " " + base64.StdEncoding.EncodeToString(b) + "\n")
}

func decodeLine(label string, size int, b []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(b, []byte(label+" "))
	if !ok || !bytes.HasSuffix(rest, []byte("\n")) {
		return nil, fmt.Errorf("not a %q line", label)
	}
	rest = rest[:len(rest)-1]
	if base64.StdEncoding.EncodedLen(size) != len(rest) {
		return nil, fmt.Errorf("%s: want %d base64 characters, got %d", label, base64.StdEncoding.EncodedLen(size), len(rest))
	}
	out := make([]byte, size)
	n, err := base64.StdEncoding.Strict().Decode(out, rest)
	if err != nil || n != size {
		return nil, fmt.Errorf("%s: bad base64", label)
	}
	return out, nil
}

// ParsePublicKey reads the content of a NAME.pub file.
func ParsePublicKey(b []byte) (ed25519.PublicKey, error) {
	k, err := decodeLine(publicLabel, ed25519.PublicKeySize, b)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(k), nil
}

// ParsePrivateKey reads the content of a NAME.key file (the 32-byte seed).
func ParsePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	seed, err := decodeLine(privateLabel, ed25519.SeedSize, b)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// LoadPublicKey reads a NAME.pub file.
func LoadPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (want a NAME.pub written by imgcast keygen)", path, err)
	}
	return k, nil
}

// LoadPrivateKey reads a NAME.key file.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := readSmall(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (want a NAME.key written by imgcast keygen)", path, err)
	}
	return k, nil
}

// LoadBuiltinKey reads the public key built into the boot image
// (root+BuiltinKeyPath; root "" is "/"), or returns nil and no error when
// the image has none. A key file that is there but unreadable or malformed
// is an error: the client must then refuse to image rather than go on
// without verification.
func LoadBuiltinKey(root string) (ed25519.PublicKey, error) {
	k, err := LoadPublicKey(filepath.Join("/", root, BuiltinKeyPath))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return k, err
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, 512)
	n, err := f.Read(b)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if n == len(b) {
		return nil, fmt.Errorf("%s is too large for a key file", path)
	}
	return b[:n], nil
}

// WriteKeyPair writes a new key pair to NAME.key (mode 0600) and NAME.pub.
// Neither may exist yet.
func WriteKeyPair(name string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{name + ".key", encodeLine(privateLabel, priv.Seed()), 0o600},
		{name + ".pub", encodeLine(publicLabel, pub), 0o644},
	} {
		if err := writeNew(f.path, f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return pub, nil
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Sign returns the content of the signature file for manifest bytes b.
func Sign(b []byte, key ed25519.PrivateKey) []byte {
	return encodeLine(signatureLabel, ed25519.Sign(key, b))
}

// Verify checks the signature file sig over the exact manifest bytes b and
// parses b.
func Verify(b, sig []byte, key ed25519.PublicKey) (*Manifest, error) {
	s, err := decodeLine(signatureLabel, ed25519.SignatureSize, sig)
	if err != nil {
		return nil, fmt.Errorf("%w: signature file: %w", ErrManifest, err)
	}
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, b, s) {
		return nil, fmt.Errorf("%w: %w (signed with another key, or altered)", ErrManifest, ErrSignature)
	}
	return Parse(b)
}
