// Command gunzip decodes the gzip file named by its argument to stdout with Go's
// compress/gzip, reading exactly one member: ocibuild's layers must be readable by Go
// (containerd, the Docker daemon and most registries' tooling are Go programs).
package main

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gunzip:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	in := bufio.NewReader(file)
	reader, err := gzip.NewReader(in)
	if err != nil {
		return err
	}
	reader.Multistream(false)
	out := bufio.NewWriter(os.Stdout)
	if _, err := io.Copy(out, reader); err != nil {
		return err
	}
	if _, err := in.Peek(1); err != io.EOF {
		return fmt.Errorf("data after the gzip member")
	}
	return out.Flush()
}
