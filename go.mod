module github.com/imgcast/imgcast

go 1.26.0

require (
	github.com/klauspost/reedsolomon v1.14.2
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require github.com/klauspost/cpuid/v2 v2.3.0 // indirect
