from flwd.cli import main

main()
