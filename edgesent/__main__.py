from edgesent.cli import main

main()
