from conveyor_server._main import main

main()
