package main

import (
	"fmt"
	"strings"
)

// longOption is one entry of a getopt_long option table.
type longOption struct {
	name   string
	hasArg bool
	key    int // the short option letter, or a code above 255
}

// option is one parsed option.
type option struct {
	key  int
	name string // as the user wrote it, for messages
	arg  string
}

// getopt parses args (without the program name) with GNU getopt_long
// semantics: options and operands may be mixed, "--" ends the options,
// short options cluster (-kn, -fFILE, -f FILE), long options take
// "--opt=v" or "--opt v", and any unambiguous prefix of a long name is
// accepted (an exact name always wins; prefixes that all mean the same
// option are not ambiguous). Errors carry glibc's exact wording.
func getopt(prog string, args []string, shorts string, longs []longOption) ([]option, []string, error) {
	var opts []option
	var operands []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			operands = append(operands, args[i+1:]...)
			return opts, operands, nil
		case strings.HasPrefix(a, "--"):
			o, used, err := parseLong(prog, a, args[i+1:], longs)
			if err != nil {
				return nil, nil, err
			}
			opts = append(opts, o)
			i += used
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				c := a[j]
				k := strings.IndexByte(shorts, c)
				if k < 0 || c == ':' {
					return nil, nil, fmt.Errorf("%s: invalid option -- '%c'", prog, c)
				}
				o := option{key: int(c), name: "-" + string(c)}
				if k+1 < len(shorts) && shorts[k+1] == ':' {
					switch {
					case j+1 < len(a):
						o.arg = a[j+1:]
					case i+1 < len(args):
						i++
						o.arg = args[i]
					default:
						return nil, nil, fmt.Errorf("%s: option requires an argument -- '%c'", prog, c)
					}
					opts = append(opts, o)
					break
				}
				opts = append(opts, o)
			}
		default:
			operands = append(operands, a)
		}
	}
	return opts, operands, nil
}

// parseLong parses one "--name[=value]" argument; rest are the arguments
// after it, used reports how many of them were consumed.
func parseLong(prog, a string, rest []string, longs []longOption) (option, int, error) {
	body := a[2:]
	name, value, hasValue := strings.Cut(body, "=")
	var found *longOption
	var matches []*longOption
	ambiguous := false
	for i := range longs {
		l := &longs[i]
		if l.name == name {
			found, matches, ambiguous = l, nil, false
			break
		}
		if strings.HasPrefix(l.name, name) && !fullNameOnly[l.name] {
			if len(matches) > 0 && (l.hasArg != matches[0].hasArg || l.key != matches[0].key) {
				ambiguous = true
			}
			matches = append(matches, l)
		}
	}
	if found == nil {
		switch {
		case ambiguous:
			var b strings.Builder
			fmt.Fprintf(&b, "%s: option '%s' is ambiguous; possibilities:", prog, a)
			for _, m := range matches {
				fmt.Fprintf(&b, " '--%s'", m.name)
			}
			return option{}, 0, fmt.Errorf("%s", b.String())
		case len(matches) == 0:
			return option{}, 0, fmt.Errorf("%s: unrecognized option '%s'", prog, a)
		}
		found = matches[0]
	}
	o := option{key: found.key, name: "--" + found.name}
	switch {
	case hasValue && !found.hasArg:
		return option{}, 0, fmt.Errorf("%s: option '--%s' doesn't allow an argument", prog, found.name)
	case hasValue:
		o.arg = value
		return o, 0, nil
	case found.hasArg && len(rest) == 0:
		return option{}, 0, fmt.Errorf("%s: option '--%s' requires an argument", prog, found.name)
	case found.hasArg:
		o.arg = rest[0]
		return o, 1, nil
	}
	return o, 0, nil
}

// atoi parses like C's atoi: leading blanks, an optional sign, digits;
// anything else ends the number, and no digits give 0.
func atoi(s string) int {
	i := 0
	for i < len(s) && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r')) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	n := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int(s[i]-'0')
		if n > 1<<31 {
			n = 1 << 31 // C would overflow; keep it sane
		}
	}
	if neg {
		return -n
	}
	return n
}
