// composecheck loads a compose project exactly as `docker compose config` does, with the same
// library (compose-go, the loader Docker Compose is built on) and the same loading steps, and
// prints the resolved project as JSON. It needs no Docker engine, so `make test` can check
// docker-compose.yaml with every file and profile `make up` selects (compose/lib.sh).
//
//	composecheck --project-directory DIR -f FILE [-f FILE...] [--profile NAME...]
//
// On a file compose would refuse it prints compose's own error and exits 1.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

// repeated is a flag that may be given several times (-f, --profile), in order.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	var files, profiles repeated
	flags := flag.NewFlagSet("composecheck", flag.ContinueOnError)
	dir := flags.String("project-directory", "", "the project directory (where .env is read)")
	flags.Var(&files, "f", "a compose file, as docker compose -f (repeatable; later files override)")
	flags.Var(&profiles, "profile", "a profile to enable, as docker compose --profile (repeatable)")
	if err := flags.Parse(os.Args[1:]); err != nil || flags.NArg() > 0 || len(files) == 0 {
		fmt.Fprintln(os.Stderr, "usage: composecheck --project-directory DIR -f FILE [-f FILE...] [--profile NAME...]")
		os.Exit(2)
	}
	project, err := load(*dir, files, profiles)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(project)
}

// load follows docker compose v5.7.1: internal/projectloader/loader.go (buildProjectOptions,
// postProcessProject) with the options cmd/compose/config.go passes by default.
func load(dir string, files, profiles []string) (string, error) {
	options := []cli.ProjectOptionsFn{
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithWorkingDirectory(dir),
		cli.WithOsEnv,
	}
	if _, present := os.LookupEnv("PWD"); !present {
		if pwd, err := os.Getwd(); err == nil {
			options = append(options, cli.WithEnv([]string{"PWD=" + pwd}))
		}
	}
	options = append(options,
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithDefaultProfiles(profiles...),
		cli.WithName(""),
	)
	projectOptions, err := cli.NewProjectOptions(files, options...)
	if err != nil {
		return "", err
	}
	project, err := projectOptions.LoadProject(context.Background())
	if err != nil {
		return "", err
	}
	if project.Name == "" {
		return "", fmt.Errorf("project name can't be empty. Use ProjectName option to set a valid name")
	}
	if project, err = project.WithServicesEnabled(); err != nil {
		return "", err
	}
	if project, err = project.WithSelectedServices(nil); err != nil {
		return "", err
	}
	project = project.WithoutUnnecessaryResources()
	data, err := project.MarshalJSON()
	if err != nil {
		return "", err
	}
	return string(data), nil
}
