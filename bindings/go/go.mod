module github.com/docker-delta/docker-delta/bindings/go

go 1.19
