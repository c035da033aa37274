from raftchroma.cli import main

main()
