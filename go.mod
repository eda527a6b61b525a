module github.com/imgcast/imgcast

go 1.26
